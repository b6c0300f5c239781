"""The training options shared by every pretrain.py and train.py: their command-line flags, the
settings they become (`TrainSettings`), the learning-rate schedule and optimizer those settings
define, and the checks a resumed run makes against its checkpoint."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common.checkpoint import prev_path
from common.cli import UserError, add_gpu_option, add_vocab_option, non_negative_int, positive_int
from common.paths import rel
from common.tracking import add_tracking_args


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int  # global batch: summed over ranks and accumulation steps
    lr: float
    warmup: float = 0.1  # share of all steps (< 1) or a number of steps (>= 1)
    weight_decay: float = 0.01
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    seed: int = 42
    save_every: int = 0  # steps between checkpoints; 0 = at epoch ends only
    max_steps: int = 0  # stop after this many optimizer steps; 0 = no cap
    beta2: float = 0.999  # AdamW's second-moment decay (0.98-0.99 adapt faster in short runs)
    compile: bool = False  # torch.compile the training forward/backward (CPU inductor or CUDA)

    def warmup_steps(self, total: int) -> int:
        return int(self.warmup * total) if self.warmup < 1 else int(self.warmup)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup from 0 to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, fused: bool,
                   beta2: float = 0.999) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, LayerNorm weights and embeddings' position/segment tables."""
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and "norm" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, beta2), eps=1e-8, fused=fused or None)


# Settings a resumed run must share with the checkpoint (they shape the trajectory), by option name.
RESUME_OPTIONS = {"epochs": "--epoch", "batch_size": "--batch", "lr": "--lr", "warmup": "--warmup",
                  "weight_decay": "--weight_decay", "grad_accum": "--grad_accum", "max_grad_norm": "max_grad_norm",
                  "seed": "--seed", "max_steps": "--max_steps", "beta2": "--beta2"}


def add_common_training_args(parser: argparse.ArgumentParser, folder: Path, save_default: str, batch: int,
                             epoch: int, lr: float) -> None:
    """Options shared by pretrain.py and train.py."""
    parser.add_argument("--config", default=rel(folder / "config_half.json"), help="model config JSON")
    add_vocab_option(parser)
    parser.add_argument("--save", default=rel(folder / save_default), help="checkpoint to write")
    parser.add_argument("--epoch", type=positive_int, default=epoch, help="epochs")
    parser.add_argument("--batch", type=positive_int, default=batch,
                        help="global batch size (summed over GPUs / torchrun ranks and --grad_accum steps)")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate (AdamW)")
    parser.add_argument("--warmup", type=float, default=0.05, help="warmup: share of steps if < 1, else a step count")
    parser.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay")
    parser.add_argument("--beta2", type=float, default=0.999, help="AdamW beta2 (second-moment decay)")
    parser.add_argument("--grad_accum", type=positive_int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--max_steps", type=non_negative_int, default=0, help="stop after this many steps (0: no cap)")
    add_gpu_option(parser)
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training step (inductor; CPU or CUDA)")
    parser.add_argument("--resume", nargs="?", const="yes", default="no", choices=RESUME_MODES, metavar="auto",
                        help="continue from the checkpoint training left behind; 'auto': continue when there is "
                             "one, else start (what a restarted worker of torchrun --max-restarts needs)")
    add_tracking_args(parser)


RESUME_MODES = ("no", "yes", "auto")


def resolve_resume(mode: str, save: Path) -> bool:
    """Whether to resume: --resume needs a checkpoint, a fresh start refuses to overwrite one, 'auto' takes either."""
    existing = save if save.exists() else prev_path(save)
    if mode == "yes" and not existing.exists():
        raise UserError(f"nothing to resume: {save} not found (run without --resume to start, or pass its --save)")
    if mode == "no" and existing.exists():
        raise UserError(f"{existing} exists: pass --resume to continue it, or another --save to start over")
    return existing.exists()


def settings_from_args(args: argparse.Namespace, save_every: int = 0) -> TrainSettings:
    if args.lr <= 0:
        raise UserError(f"--lr must be > 0, got {args.lr}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    if not 0 < args.beta2 < 1:
        raise UserError(f"--beta2 must be in (0, 1), got {args.beta2}")
    return TrainSettings(epochs=args.epoch, batch_size=args.batch, lr=args.lr, warmup=args.warmup,
                         weight_decay=args.weight_decay, grad_accum=args.grad_accum, seed=args.seed,
                         save_every=save_every, max_steps=args.max_steps, beta2=args.beta2, compile=args.compile)
