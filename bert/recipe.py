"""The encoder recipe table: short MLM pretrainings on the reviews store, each one change from the
experiment's setting, scored on the same held-out instances (bert/README.md, "Why the encoder needs
rotary attention here").

    python recipe.py --name "as the experiment"                    # whole-word 15%, learned positions
    python recipe.py --name rotary --rotary
    python recipe.py --name "piece masking" --mask token
    python recipe.py --name "ALiBi bias" --alibi

Each run trains BertForPreTraining (config_half.json's shape, dropout 0, n_seq 128) for --steps steps of
--batch instances with the project's AdamW groups, linear warmup and decay, clipping at 1 and the MLM bias
at the log unigram prior, as pretrain.py does, on instances of the store (the held-out 1% left out). Every
--eval_every steps it scores the first 256 held-out instances twice, masked with fixed seeds: whole words
at 15% (the experiment's task) and single pieces at 15% (a piece's word-mates visible: a task that needs
only the neighbours). One CSV row per point goes to --out. The levers:
- --mask token: mask single pieces instead of whole words (BERT's first release did);
- --mask_prob: the share masked (Wettig et al., 2022: 40% can train better);
- --rotary: rotary attention (ModelConfig.rotary, the experiment's setting now);
- --alibi: a fixed distance penalty on the attention scores, -m_h |i - j| with ALiBi's head slopes
  (Press et al., 2022; symmetric, as in encoders), on top of the learned positions;
- --pos_sin / --seg_zero: the position table started at scaled sinusoids / the segment table at zero;
- --crop L: the first --crop_frac of the steps on random L-token windows, n_seq / L times as many per
  batch (the same tokens a step): a shorter context, where the neighbour is a larger share of the
  uniform attention an untrained layer starts with.
"""
from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bert.data import DATA_DIR
from bert.model import BertForPreTraining
from bert.pretrain import PretrainingDataset, init_vocab_heads
from common.cli import make_parser, positive_int, probability, run_main
from common.config import load_config
from common.layers import SelfAttention
from common.pretrain import Subset
from common.token_store import TokenStore
from common.trainer import lr_factor, make_optimizer

FOLDER = Path(__file__).resolve().parent
N_SEQ = 128
HELDOUT_SCORED = 256


def alibi_attention(bias: torch.Tensor):
    """SelfAttention.forward with `bias` (H, T, T) added to the scores, padding still masked."""
    def forward(self: SelfAttention, x: torch.Tensor, attn_mask: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.d_head).permute(2, 0, 3, 1, 4)
        scores = bias[:, :T, :T][None].expand(B, -1, -1, -1)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=scores)
        return self.out(y.transpose(1, 2).reshape(B, T, D))
    return forward


def run(args) -> None:
    torch.manual_seed(args.seed)
    store = TokenStore(args.input, hint="run python data.py --input none --extra ../data/ratings_train.json "
                                        "--n_seq 128 --output ../data/reviews_bert128")
    cfg = dataclasses.replace(load_config(args.config).with_vocab(store.meta["vocab_size"]), dropout=0.0,
                              n_seq=N_SEQ, rotary=args.rotary)
    train = PretrainingDataset(store, cfg)
    train.mask_prob, train.slots = args.mask_prob, train.max_masked(N_SEQ, args.mask_prob)
    if args.mask == "token":  # every piece its own word: whole-word masking becomes piece masking
        train.word_starts = np.ones_like(train.word_starts)
    views = {"word": PretrainingDataset(store, cfg), "piece": PretrainingDataset(store, cfg)}
    views["piece"].word_starts = np.ones_like(views["piece"].word_starts)
    n = len(train)
    n_heldout = max(1, int(round(n * 0.01)))
    train_idx, heldout_idx = np.arange(n - n_heldout), np.arange(n - n_heldout, n)[:HELDOUT_SCORED]
    heldout = {name: [view.collate(heldout_idx[i:i + 64], np.random.default_rng(i)) for i in range(0, len(heldout_idx), 64)]
               for name, view in views.items()}

    model = BertForPreTraining(cfg)
    init_vocab_heads(model, Subset(train, train_idx))
    embeddings = model.trunk.encoder.embeddings
    if args.seg_zero:
        torch.nn.init.zeros_(embeddings.segment.weight)
    if args.pos_sin:
        position = torch.arange(N_SEQ)[:, None].float() / 10000 ** (torch.arange(0, cfg.d_hidn, 2).float() / cfg.d_hidn)
        table = torch.stack([position.sin(), position.cos()], -1).flatten(1)
        with torch.no_grad():
            embeddings.position.weight[:N_SEQ] = table * (0.02 / table.std())  # the scale of N(0, 0.02)
    if args.alibi:
        slopes = torch.tensor([2.0 ** (-8 * (h + 1) / cfg.n_head) for h in range(cfg.n_head)])
        distance = (torch.arange(N_SEQ)[:, None] - torch.arange(N_SEQ)[None]).abs().float()
        forward = alibi_attention(-slopes[:, None, None] * distance)
        for layer in model.trunk.encoder.layers:
            layer.attention.forward = forward.__get__(layer.attention)
    optimizer = make_optimizer(model, args.lr, 0.01, fused=False)
    warmup = max(1, int(args.warmup * args.steps))
    step_fn = torch.compile(model) if args.compile else model
    order = np.random.default_rng(args.seed + 1)

    def evaluate() -> dict[str, float]:
        model.eval()
        out = {}
        with torch.no_grad():
            for name, batches in heldout.items():
                sums = np.zeros(3)
                for batch in batches:
                    _, m = model(**batch)
                    sums += [float(m["mlm_loss"][0]), float(m["mlm_acc"][0]), float(m["mlm_loss"][1])]
                out[f"{name}_loss"], out[f"{name}_acc"] = sums[0] / sums[2], sums[1] / sums[2]
        model.train()
        return out

    t0, tokens = time.perf_counter(), 0
    for step in range(1, args.steps + 1):
        if args.crop and step <= args.crop_frac * args.steps:
            train.n_seq, train.slots = args.crop, train.max_masked(args.crop, args.mask_prob)
            idx = order.choice(train_idx, args.batch * N_SEQ // args.crop, replace=False)
            window = np.random.default_rng([step, 9 + args.seed])

            def crop(i: int) -> np.ndarray:
                x = PretrainingDataset.instance(train, i)
                start = int(window.integers(0, max(1, len(x) - args.crop + 1)))
                return x[start:start + args.crop]
            train.instance = crop
        else:
            train.n_seq, train.slots = N_SEQ, train.max_masked(N_SEQ, args.mask_prob)
            train.__dict__.pop("instance", None)
            idx = order.choice(train_idx, args.batch, replace=False)
        batch = train.collate(idx, np.random.default_rng([step, 7 + args.seed]))
        tokens += int(batch["attention_mask"].sum())
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step - 1, args.steps, warmup)
        loss, _ = step_fn(**batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            elapsed = time.perf_counter() - t0
            row = {"name": args.name, "step": step, "train_loss": round(float(loss.detach()), 4),
                   **{k: round(float(v), 4) for k, v in evaluate().items()}, "tokens_per_s": round(tokens / elapsed),
                   "minutes": round(elapsed / 60, 2)}
            print(row, flush=True)
            new = not Path(args.out).exists()
            with open(args.out, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    writer.writeheader()
                writer.writerow(row)


def main() -> None:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the row's name in --out")
    parser.add_argument("--input", default=str(DATA_DIR / "reviews_bert128"), help="BERT token store of the reviews (n_seq 128)")
    parser.add_argument("--config", default=str(FOLDER / "config_half.json"), help="model shape (dropout 0, n_seq 128 used)")
    parser.add_argument("--out", default=str(FOLDER / "experiment" / "recipe.csv"), help="CSV the points are appended to")
    parser.add_argument("--steps", type=positive_int, default=300, help="training steps")
    parser.add_argument("--batch", type=positive_int, default=32, help="instances a step")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--warmup", type=probability, default=0.05, help="share of the steps warming up")
    parser.add_argument("--mask", choices=["word", "token"], default="word", help="whole words or single pieces")
    parser.add_argument("--mask_prob", type=probability, default=0.15, help="share of the tokens masked")
    parser.add_argument("--rotary", action="store_true", help="rotary attention (ModelConfig.rotary)")
    parser.add_argument("--alibi", action="store_true", help="ALiBi distance penalty on the scores")
    parser.add_argument("--pos_sin", action="store_true", help="position table started at scaled sinusoids")
    parser.add_argument("--seg_zero", action="store_true", help="segment table started at zero")
    parser.add_argument("--crop", type=int, default=0, help="train the first --crop_frac on windows of this many tokens")
    parser.add_argument("--crop_frac", type=probability, default=0.5, help="share of the steps on --crop windows")
    parser.add_argument("--eval_every", type=positive_int, default=50, help="steps between held-out scores")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model, the batches and the masks")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training step")
    args = parser.parse_args()
    run_main(lambda: run(args))


if __name__ == "__main__":
    main()
