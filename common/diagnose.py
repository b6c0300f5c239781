"""Two checks of whether a trunk learns: representation collapse and the context probe.

    python diagnose.py                                 # in a model folder: its save_pretrain.pth, held-out slice
    python diagnose.py --checkpoint save_pretrain.pth.prev
    python diagnose.py --probe context                 # can the fresh trunk learn to read its neighbours?

Each model folder's diagnose.py runs `diagnose_main` with its pretraining pieces (pretrain.py's model
class and dataset over the token store, data.py's output folder).

Prints, for the embeddings and every layer's output, the mean cosine similarity
between the hidden states of different real positions of the same instance,
for the checkpoint and for a freshly initialized model of the same config.
Near 1.0 means every position carries the same vector: the trunk has collapsed
to predicting the unigram distribution (the plateau a short pretraining run can
end on), and a classifier on top of it starts from no information. A trained
language model keeps positions apart (well below 1.0 in the upper layers).

The context probe (`context_probe`) trains a fresh trunk of the config on a
synthetic task only context solves: rows "a a b b c c ..." of random ids, one
token of some pairs replaced by [MASK], the loss on those. The unigram
distribution is uniform, so the loss stays at ln(n_vocab) until the trunk routes
each position's twin into it; it prints the step at which the masked tokens are
all recovered, or "not solved". A masked LM that cannot leave this plateau
cannot leave the real one (see bert/README.md).
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from common.checkpoint import load_checkpoint
from common.cli import REPO_ROOT, UserError, make_parser, positive_int, rel, run_main
from common.config import ModelConfig, load_config
from common.layers import LMHead, Transformer
from common.losses import IGNORE
from common.pretrain import heldout_split
from common.token_store import TokenStore
from common.vocab import N_SPECIAL  # ids below are special pieces: never drawn as a probe token
from common.vocab import MASK_ID


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


def context_batch(n_rows: int, length: int, n_vocab: int, generator: torch.Generator,
                  mask_share: float = 0.15, causal: bool = False) -> tuple[Tensor, Tensor]:
    """One batch of the context probe: (input_ids (B, length), targets (B, length)).

    Each row is pairs of one random id ("a a b b ..."); each pair is chosen with probability
    mask_share (at least one pair a row) and one of its two tokens becomes [MASK] (for a causal trunk
    the second, the only one its twin precedes). Targets are the original ids there, IGNORE elsewhere."""
    pairs = torch.randint(N_SPECIAL, n_vocab, (n_rows, length // 2), generator=generator)
    ids = pairs.repeat_interleave(2, dim=1)
    chosen = torch.rand(n_rows, length // 2, generator=generator) < mask_share
    chosen[torch.arange(n_rows), torch.randint(0, length // 2, (n_rows,), generator=generator)] = True
    second = torch.ones_like(chosen) if causal else torch.rand(n_rows, length // 2, generator=generator) < 0.5
    position = 2 * torch.arange(length // 2) + second.long()  # (B, length / 2) the masked token of each pair
    masked = torch.zeros_like(ids, dtype=torch.bool).scatter_(1, position, chosen)
    return ids.masked_fill(masked, MASK_ID), ids.masked_fill(~masked, IGNORE)


def context_probe(trunk: nn.Module, token_embedding: nn.Embedding, cfg: ModelConfig, steps: int, lr: float,
                  batch: int = 32, length: int = 64, seed: int = 0, check_every: int = 25, solved_acc: float = 0.99,
                  causal: bool = False, log: bool = False) -> int | None:
    """Train `trunk` (input_ids, attention_mask -> hidden (B, T, D), or a tuple starting with it) with an
    MLM head tied to `token_embedding` on the context probe for at most `steps` AdamW steps at `lr`
    (warmup over the first 5%, then constant; clipping at 1). Returns the first step, checked every
    `check_every`, at which the masked tokens of a fixed held-out batch are recovered with accuracy >=
    `solved_acc`; None if never. cfg.n_vocab ids are drawn (the trunk's vocab), cfg.n_seq >= length."""
    if length % 2 or length > cfg.n_seq:
        raise ValueError(f"the probe's length must be even and at most n_seq={cfg.n_seq}, got {length}")
    head = LMHead(cfg, token_embedding, transform=True)
    params = list({id(p): p for p in [*trunk.parameters(), *head.parameters()]}.values())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    generator = torch.Generator().manual_seed(seed)
    heldout_ids, heldout_targets = context_batch(4 * batch, length, cfg.n_vocab, torch.Generator().manual_seed(seed + 1),
                                                 causal=causal)

    def hidden_of(input_ids: Tensor) -> Tensor:
        out = trunk(input_ids, torch.ones_like(input_ids))
        return out[0] if isinstance(out, tuple) else out

    trunk.train()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, step / warmup)
        input_ids, targets = context_batch(batch, length, cfg.n_vocab, generator, causal=causal)
        loss, _ = head.loss(hidden_of(input_ids).flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % check_every == 0 or step == steps:
            trunk.eval()
            with torch.no_grad():
                _, metrics = head.loss(hidden_of(heldout_ids).flatten(0, 1), heldout_targets.flatten())
            trunk.train()
            acc = float(metrics["acc"][0]) / float(metrics["acc"][1])
            if log:
                print(f"step {step}: train loss {float(loss.detach()):.3f}, held-out acc {acc:.3f} "
                      f"(chance {1 / (cfg.n_vocab - N_SPECIAL):.4f}, loss at chance {np.log(cfg.n_vocab - N_SPECIAL):.2f})",
                      flush=True)
            if acc >= solved_acc:
                return step
    return None


@dataclass
class Pretraining:
    """A model's pretraining pieces, as its pretrain.py and data.py define them."""
    name: str  # "gpt", "bert", "spanbert": its folder
    build_model: Callable[[ModelConfig], nn.Module]  # the pretraining model (with `.trunk`)
    open_dataset: Callable[[TokenStore, ModelConfig], Any]  # the dataset over a token store
    default_input: Path  # data.py's token store


def diagnose(spec: Pretraining, checkpoint: Path, store_dir: Path | None, n_instances: int, seed: int) -> None:
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
    indices = heldout_split(len(dataset), state["args"].get("heldout", 0.01), store.meta.get("heldout_instances", 0))[1][:n_instances]
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


def probe_context(spec: Pretraining, config: str, steps: int, lr: float, n_vocab: int, length: int, seed: int) -> None:
    """Run the context probe on a fresh trunk of `config` (dropout 0) and print where it is solved."""
    cfg = dataclasses.replace(load_config(config), dropout=0.0, n_vocab=n_vocab)
    if cfg.n_seq < length:
        raise UserError(f"{config}: n_seq {cfg.n_seq} is shorter than the probe's --length {length}")
    torch.manual_seed(seed)
    trunk = spec.build_model(cfg).trunk
    transformer = next(m for m in trunk.modules() if isinstance(m, Transformer))
    print(f"{spec.name} trunk of {config} (rotary {str(cfg.rotary).lower()}): context probe, rows of {length} "
          f"tokens in pairs of {n_vocab - N_SPECIAL} ids, lr {lr:g}, up to {steps} steps")
    solved = context_probe(trunk, transformer.embeddings.token, cfg, steps, lr, length=length, seed=seed,
                           causal=transformer.causal, log=True)
    print(f"solved at step {solved}" if solved else f"not solved in {steps} steps: the trunk does not learn to read "
          f"its neighbours (the plateau of bert/README.md)")


def diagnose_main(spec: Pretraining) -> None:
    """`python diagnose.py` of one model folder."""
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--probe", choices=["collapse", "context"], default="collapse",
                        help="collapse: the similarity table of a checkpoint; context: train a fresh trunk on the "
                             "context probe")
    parser.add_argument("--checkpoint", default=None, help="pretraining checkpoint; None: <model>/save_pretrain.pth")
    parser.add_argument("--input", default=None, help="token store; None: the model's data.py output")
    parser.add_argument("--instances", type=positive_int, default=8, help="held-out instances to probe")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh model and of any masking")
    parser.add_argument("--config", default=rel(REPO_ROOT / spec.name / "config_half.json"),
                        help="context probe: the model config of the trunk (experiment/config.json: the experiment's)")
    parser.add_argument("--steps", type=positive_int, default=1000, help="context probe: most training steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="context probe: AdamW learning rate")
    parser.add_argument("--probe_vocab", type=positive_int, default=1000, help="context probe: ids drawn")
    parser.add_argument("--length", type=positive_int, default=64, help="context probe: tokens per row (even)")
    args = parser.parse_args()
    if args.probe == "context":
        run_main(lambda: probe_context(spec, args.config, args.steps, args.lr, args.probe_vocab, args.length, args.seed))
        return
    checkpoint = Path(args.checkpoint) if args.checkpoint else REPO_ROOT / spec.name / "save_pretrain.pth"
    run_main(lambda: diagnose(spec, checkpoint, Path(args.input) if args.input else None, args.instances, args.seed))


if __name__ == "__main__":  # the command lives in each model folder, which passes its spec
    print("error: run python diagnose.py in a model folder", file=sys.stderr)
    sys.exit(2)
