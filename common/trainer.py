"""The one training loop, used by every pretrain.py and train.py.

A model folder supplies only what is special to it:
- a dataset with `__len__` and `collate(indices) -> dict of tensors`
  (must contain `input_ids`, used to count real tokens for tokens/s),
- a model whose `forward(**batch)` returns (loss, metrics), where metrics maps
  a name to a (sum, count) pair, so that averages stay exact across
  micro-batches, ranks and evaluation batches (the whole module is what DDP
  wraps, so the loss is computed inside forward),
- a batch plan: for each epoch, the list of global batches (index arrays).

The loop does the rest: AdamW with linear warmup then linear decay, gradient
accumulation and clipping, bf16 autocast on CUDA, DDP under torchrun (each
rank takes its slice of every global batch), tqdm progress with loss and
tokens/s, atomic checkpoints every N steps and every epoch, exact resume
(model, optimizer, step, RNG, position in the epoch's batch plan), and a clean
checkpoint-and-exit on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from common.checkpoint import load_checkpoint, save_checkpoint
from common.cli import UserError
from common.device import Runtime
from common.vocab import PAD_ID

Metrics = dict[str, tuple[Tensor, Tensor]]
StepFn = Callable[[nn.Module, dict[str, Tensor]], tuple[Tensor, Metrics]]


def forward_step(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
    """The default step: the model computes its own loss and metrics."""
    return model(**batch)
BatchPlan = Callable[[int], list[np.ndarray]]


class Dataset(Protocol):
    def __len__(self) -> int: ...
    def collate(self, indices: np.ndarray) -> dict[str, Tensor]: ...


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

    def warmup_steps(self, total: int) -> int:
        return int(self.warmup * total) if self.warmup < 1 else int(self.warmup)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup from 0 to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def random_batches(n: int, batch_size: int, seed: int, epoch: int, drop_last: bool = True) -> list[np.ndarray]:
    """A seeded permutation of range(n) cut into batches; the same (seed, epoch) gives the same plan."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    stop = (n // batch_size) * batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, fused: bool) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, LayerNorm weights and embeddings' position/segment tables."""
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and "norm" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def reduce_metrics(totals: dict[str, list[float]], runtime: Runtime) -> dict[str, float]:
    """Sum (sum, count) pairs over ranks and return the averages."""
    names = sorted(totals)
    if runtime.distributed:
        t = torch.tensor([totals[n] for n in names], dtype=torch.float64, device=runtime.device)
        dist.all_reduce(t)
        totals = {n: t[i].tolist() for i, n in enumerate(names)}
    return {n: totals[n][0] / totals[n][1] if totals[n][1] else float("nan") for n in names}


def add_metrics(totals: dict[str, list[float]], metrics: Metrics) -> None:
    for name, (s, c) in metrics.items():
        acc = totals.setdefault(name, [0.0, 0.0])
        acc[0] += float(s)
        acc[1] += float(c)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int, runtime: Runtime,
             batches: list[np.ndarray] | None = None, step_fn: StepFn = forward_step) -> dict[str, float]:
    """Average every metric over `dataset` (all ranks together), in eval mode."""
    was_training = model.training
    model.eval()
    if batches is None:
        batches = [np.arange(i, min(i + batch_size, len(dataset))) for i in range(0, len(dataset), batch_size)]
    totals: dict[str, list[float]] = {}
    for indices in batches[runtime.rank :: runtime.world_size]:
        batch = to_device(dataset.collate(indices), runtime.device)
        with runtime.autocast():
            _, metrics = step_fn(model, batch)
        add_metrics(totals, metrics)
    model.train(was_training)
    return reduce_metrics(totals, runtime)


class _StopFlag:
    """Turns SIGINT/SIGTERM into a request to checkpoint and stop after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # second signal: give up at once
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then stopping", file=sys.stderr)

    def __enter__(self) -> "_StopFlag":
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


@dataclass
class Progress:
    epoch: int = 0
    step_in_epoch: int = 0  # batches of the current epoch already done
    global_step: int = 0


@dataclass
class Trainer:
    model: nn.Module
    train_set: Dataset
    batch_plan: BatchPlan
    settings: TrainSettings
    runtime: Runtime
    checkpoint_path: Path
    step_fn: StepFn = forward_step
    # Extra entries stored in every checkpoint (config, vocab fingerprint, args, kind...)
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)
    # Called by every rank after each epoch with (epoch, train metrics); returns
    # the metrics to log. Evaluation happens here.
    on_epoch_end: Callable[[int, dict[str, float]], dict[str, Any]] | None = None
    desc: str = "train"

    def __post_init__(self) -> None:
        s, rt = self.settings, self.runtime
        if s.batch_size % (rt.world_size * s.grad_accum):
            raise UserError(
                f"--batch {s.batch_size} must be divisible by ranks x --grad_accum "
                f"({rt.world_size} x {s.grad_accum}); choose a multiple"
            )
        self.model.to(rt.device)
        self.train_module: nn.Module = self.model
        if rt.distributed:
            self.train_module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
            )
        self.optimizer = make_optimizer(self.model, s.lr, s.weight_decay, fused=rt.device.type == "cuda")
        self.progress = Progress()
        self.steps_per_epoch = len(self.batch_plan(0))
        if self.steps_per_epoch == 0:
            raise UserError(f"not one batch of {s.batch_size} fits the training data ({len(self.train_set)} instances); lower --batch")
        self.total_steps = s.epochs * self.steps_per_epoch
        if s.max_steps:
            self.total_steps = min(self.total_steps, s.max_steps)
        self.warmup_steps = s.warmup_steps(self.total_steps)
        self.history: list[dict[str, Any]] = []

    # --- checkpoints -------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.runtime.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.runtime.device)
        return {
            **self.checkpoint_meta,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "progress": asdict(self.progress),
            "settings": asdict(self.settings),
            "rng": rng,
            "history": self.history,
        }

    def save(self) -> None:
        if self.runtime.is_main:
            save_checkpoint(self.checkpoint_path, self.state_dict())

    def resume(self, state: dict[str, Any] | None = None) -> bool:
        """Continue from `checkpoint_path` (or `state`); returns False when there is none."""
        if state is None:
            if not self.checkpoint_path.is_file():
                return False
            state = load_checkpoint(self.checkpoint_path)
        if "optimizer" not in state:
            raise UserError(f"{self.checkpoint_path} holds no training state to resume from (it is a final model)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(**state["progress"])
        self.history = list(state.get("history", []))
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.runtime.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.runtime.device)
        return True

    # --- the loop ------------------------------------------------------------
    def _done(self) -> bool:
        return self.progress.global_step >= self.total_steps

    def fit(self) -> list[dict[str, Any]]:
        s, rt, p = self.settings, self.runtime, self.progress
        model = self.train_module
        model.train()
        if p.global_step and rt.is_main:
            print(f"resuming at epoch {p.epoch + 1}, step {p.step_in_epoch}/{self.steps_per_epoch} "
                  f"(global step {p.global_step})")
        with _StopFlag() as stop:
            while p.epoch < s.epochs and not self._done():
                plan = self.batch_plan(p.epoch)
                totals: dict[str, list[float]] = {}
                steps_this_epoch = min(len(plan), p.step_in_epoch + self.total_steps - p.global_step)
                bar = tqdm(total=steps_this_epoch, initial=p.step_in_epoch, desc=f"{self.desc} {p.epoch + 1}/{s.epochs}",
                           disable=not rt.is_main, dynamic_ncols=True, mininterval=1.0)
                t0, tokens, loss_ema = time.perf_counter(), 0, None
                while p.step_in_epoch < len(plan) and not self._done():
                    loss, n_tokens = self._step(model, plan[p.step_in_epoch], totals)
                    p.step_in_epoch += 1
                    p.global_step += 1
                    tokens += n_tokens
                    loss_ema = loss if loss_ema is None else 0.98 * loss_ema + 0.02 * loss
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_ema:.3f}", tok_s=f"{tokens * rt.world_size / (time.perf_counter() - t0):,.0f}",
                                    refresh=False)
                    if stop.requested:
                        bar.close()
                        self.save()
                        raise UserError(f"stopped at step {p.global_step}; checkpoint saved to {self.checkpoint_path} "
                                        f"(run again with --resume to continue)")
                    if s.save_every and p.global_step % s.save_every == 0 and p.step_in_epoch < len(plan):
                        self.save()
                bar.close()
                elapsed = time.perf_counter() - t0
                epoch_finished = p.step_in_epoch >= len(plan)
                train_metrics = reduce_metrics(totals, rt)
                row: dict[str, Any] = {"epoch": p.epoch + 1, "step": p.global_step,
                                       **{f"train_{k}": v for k, v in train_metrics.items()},
                                       "time_s": round(elapsed, 1),
                                       "tokens_per_s": round(tokens * rt.world_size / max(elapsed, 1e-9), 1)}
                if self.on_epoch_end is not None:
                    row.update(self.on_epoch_end(p.epoch, train_metrics))
                self.history.append(row)
                if epoch_finished:
                    p.epoch, p.step_in_epoch = p.epoch + 1, 0
                self.save()
        return self.history

    def _step(self, model: nn.Module, indices: np.ndarray, totals: dict[str, list[float]]) -> tuple[float, int]:
        s, rt = self.settings, self.runtime
        lr = s.lr * lr_factor(self.progress.global_step, self.total_steps, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mine = np.array_split(indices, rt.world_size)[rt.rank]
        micro_batches = np.array_split(mine, s.grad_accum)
        loss_sum, n_tokens = 0.0, 0
        for i, mb in enumerate(micro_batches):
            cpu_batch = self.train_set.collate(mb)
            n_tokens += int((cpu_batch["input_ids"] != PAD_ID).sum())
            batch = to_device(cpu_batch, rt.device)
            # DDP averages gradients over ranks; weight each micro-batch by its share
            # of the global batch so any split gives the gradient of the global mean.
            weight = rt.world_size * len(mb) / len(indices)
            sync = i == len(micro_batches) - 1 or not rt.distributed
            with (contextlib.nullcontext() if sync else model.no_sync()), rt.autocast():
                loss, metrics = self.step_fn(model, batch)
            (loss * weight).backward()
            add_metrics(totals, metrics)
            loss_sum += float(loss.detach()) * len(mb) / len(mine)
        if s.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, n_tokens


def trunk_state(state: dict[str, Any]) -> dict[str, Tensor]:
    """The `trunk.*` weights of a saved model, with the prefix removed."""
    return {k[len("trunk."):]: v for k, v in state["model"].items() if k.startswith("trunk.")}


def perplexity(loss: float) -> float:
    """Perplexity from a mean cross-entropy (nats), capped to stay printable."""
    return math.exp(min(loss, 50.0))
