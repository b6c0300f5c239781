"""The prediction flow of every model folder's predict.py: load a fine-tuned classifier with the options it was
trained with, and classify reviews encoded as train.py encoded them."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from common.batches import sorted_batches
from common.checkpoint import check_compatible, load_checkpoint
from common.cli import UserError, add_gpu_option, add_vocab_option, make_parser, positive_int, require_file, run_main
from common.config import ModelConfig
from common.device import Runtime, setup_runtime
from common.paths import REPO_ROOT, rel
from common.reviews import encode_reviews
from common.vocab import Vocab, load_vocab


@dataclass
class Classifier:
    """A model's classifier, as its train.py defines it."""
    name: str  # "gpt", "bert", "spanbert": its folder
    wrap: Callable[[list[int], int], list[int]]  # (content ids, n_seq) -> ids with the model's special tokens
    build: Callable[[ModelConfig, dict[str, Any]], nn.Module]  # (config, train.py's options) -> the classifier


def load_classifier(spec: Classifier, path: str, vocab: Vocab, vocab_path: str, runtime: Runtime) -> tuple[nn.Module, ModelConfig]:
    """The classifier train.py saved at `path`, rebuilt with the options it was trained with, ready to classify."""
    state = load_checkpoint(path, fallback=False)
    if state.get("kind") != f"{spec.name}-classifier":
        raise UserError(f"{path} is not a fine-tuned {spec.name} classifier (it is {state.get('kind')!r}); pass save_best.pth from train.py")
    cfg = ModelConfig(**state["config"])
    check_compatible(state, path, cfg.to_dict(), vocab.fingerprint, vocab_path)
    model = spec.build(cfg, state.get("options", {}))  # train.py's options, stored as a dict
    model.load_state_dict(state["model"])
    return model.to(runtime.device).eval(), cfg


@torch.no_grad()
def predict_texts(model: nn.Module, cfg: ModelConfig, vocab: Vocab, spec: Classifier, texts: list[str],
                  runtime: Runtime, batch_size: int = 64) -> list[tuple[int, float]]:
    """(label, probability of that label) for each text."""
    data = encode_reviews([{"document": t, "label": 0} for t in texts], vocab, spec.wrap, cfg.n_seq)
    out: list[tuple[int, float]] = [(0, 0.0)] * len(texts)
    for indices in sorted_batches(data.lengths, batch_size):
        batch = data.collate(indices)
        with runtime.autocast():
            logits = model.classify(batch["input_ids"].to(runtime.device), batch["attention_mask"].to(runtime.device))[0]
        probs = logits.float().softmax(-1).cpu()
        for i, p in zip(indices, probs):
            label = int(p.argmax())
            out[i] = (label, float(p[label]))
    return out


def predict_main(spec: Classifier) -> None:
    parser = make_parser(f"Classify movie reviews with a fine-tuned {spec.name.upper()} (1 = positive, 0 = negative).")
    parser.add_argument("texts", nargs="*", help="reviews to classify")
    parser.add_argument("--file", default=None, help="a text file with one review per line")
    parser.add_argument("--model", default=rel(REPO_ROOT / spec.name / "save_best.pth"), help="model from train.py")
    add_vocab_option(parser)
    parser.add_argument("--batch", type=positive_int, default=64, help="batch size")
    add_gpu_option(parser)
    args = parser.parse_args()

    def run() -> None:
        texts = list(args.texts)
        if args.file:
            texts += [line.rstrip("\n") for line in open(require_file(args.file, "review file", "check the path"), encoding="utf-8")]
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise UserError("no review given (pass reviews as arguments or --file FILE)")
        runtime = setup_runtime(args.gpu)
        vocab = load_vocab(args.vocab)
        model, cfg = load_classifier(spec, args.model, vocab, args.vocab, runtime)
        for text, (label, prob) in zip(texts, predict_texts(model, cfg, vocab, spec, texts, runtime, args.batch)):
            print(f"{label}\t{prob:.3f}\t{'positive' if label else 'negative'}\t{text}")

    run_main(run)
