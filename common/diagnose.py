"""Representation-collapse check of a pretrained checkpoint.

    python diagnose.py                                 # in a model folder: its save_pretrain.pth, held-out slice
    python diagnose.py --checkpoint save_pretrain.pth.prev

Each model folder's diagnose.py runs `diagnose_main` with its pretraining spec
(pretrain.py's SPEC: the model, the dataset over its token store, data.py's output).

Prints, for the embeddings and every layer's output, the mean cosine similarity
between the hidden states of different real positions of the same instance,
for the checkpoint and for a freshly initialized model of the same config.
Near 1.0 means every position carries the same vector: the trunk has collapsed
to predicting the unigram distribution (the plateau a short pretraining run can
end on), and a classifier on top of it starts from no information. A trained
language model keeps positions apart (well below 1.0 in the upper layers).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from common.checkpoint import load_checkpoint
from common.cli import UserError, make_parser, positive_int, run_main
from common.config import ModelConfig
from common.layers import Transformer
from common.paths import rel
from common.pretrain import PretrainSpec, heldout_split
from common.token_store import TokenStore


def mean_position_similarity(hidden: Tensor, attention_mask: Tensor) -> float:
    """Mean cosine similarity over pairs of distinct real positions of each row, averaged over rows.

    hidden (B, T, D), attention_mask (B, T) with 1 at real positions."""
    sims = []
    for h, m in zip(hidden.float(), attention_mask.bool()):
        unit = nn.functional.normalize(h[m], dim=-1)
        n = unit.shape[0]
        if n < 2:
            continue
        gram = unit @ unit.T
        sims.append(((gram.sum() - gram.diagonal().sum()) / (n * (n - 1))).item())
    return float(np.mean(sims)) if sims else float("nan")


@torch.no_grad()
def layer_similarities(model: nn.Module, batch: dict[str, Tensor]) -> list[float]:
    """[embeddings, layer 1, ..., layer L] mean position similarity, through hooks on the shared Transformer."""
    trunks = [m for m in model.modules() if isinstance(m, Transformer)]
    if len(trunks) != 1:
        raise ValueError(f"expected one Transformer in the model, found {len(trunks)}")
    trunk = trunks[0]
    outputs: list[Tensor] = []
    hooks = [trunk.embeddings.register_forward_hook(lambda _m, _i, out: outputs.append(out))]
    hooks += [layer.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for layer in trunk.layers]
    try:
        model.eval()(**batch)
    finally:
        for hook in hooks:
            hook.remove()
    mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
    return [mean_position_similarity(out, mask) for out in outputs]


def diagnose(spec: PretrainSpec, checkpoint: Path, store_dir: Path | None, n_instances: int, seed: int) -> None:
    """Print the similarity table of `checkpoint` and of a fresh model of its config, on held-out instances."""
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint} not found: pretrain first (python pretrain.py in {spec.name}/) or pass --checkpoint")
    state = load_checkpoint(checkpoint, fallback=False)
    if not str(state.get("kind", "")).startswith(spec.name):
        raise UserError(f"{checkpoint} is a {state.get('kind')!r} checkpoint, not {spec.name}'s pretraining one")
    cfg = ModelConfig.from_dict(state["config"], str(checkpoint))
    store = TokenStore(store_dir or spec.default_input, hint=f"run python data.py in {spec.name}/")
    store.check_vocab(state["vocab"]["fingerprint"], checkpoint)
    dataset = spec.open_dataset(store, cfg)
    indices = heldout_split(len(dataset), state["args"].get("heldout", 0.01))[1][:n_instances]
    torch.manual_seed(seed)
    batch = dataset.collate(indices)
    fresh = spec.build_model(cfg)
    trained = spec.build_model(cfg)
    trained.load_state_dict(state["model"])
    steps = state.get("progress", {}).get("global_step", "?")
    rows = zip(layer_similarities(fresh, batch), layer_similarities(trained, batch))
    print(f"{spec.name}: mean cosine similarity between positions of {len(indices)} held-out instances")
    print(f"| output of | fresh init | {rel(checkpoint)} ({steps} steps) |\n|---|---|---|")
    for i, (a, b) in enumerate(rows):
        print(f"| {'embeddings' if i == 0 else f'layer {i}'} | {a:.3f} | {b:.3f} |")


def diagnose_main(spec: PretrainSpec) -> None:
    """`python diagnose.py` of one model folder."""
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="pretraining checkpoint; None: <model>/save_pretrain.pth")
    parser.add_argument("--input", default=None, help="token store; None: the model's data.py output")
    parser.add_argument("--instances", type=positive_int, default=8, help="held-out instances to probe")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh model and of any masking")
    args = parser.parse_args()
    checkpoint = Path(args.checkpoint) if args.checkpoint else spec.folder / "save_pretrain.pth"
    run_main(lambda: diagnose(spec, checkpoint, Path(args.input) if args.input else None, args.instances, args.seed))


if __name__ == "__main__":  # the command lives in each model folder, which passes its spec
    print("error: run python diagnose.py in a model folder", file=sys.stderr)
    sys.exit(2)
