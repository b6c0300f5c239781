"""The training step and the run's state, used by every pretrain.py and train.py; below it, the training
flags and settings (schedule, optimizer, resume checks) and the batch plans.

The scripts keep the loop in view (cramming's shape):

    for epoch in trainer.epochs():
        for batch in trainer.batches(train_set, plan(epoch)):   # collated ahead by a background thread
            trainer.step(batch)                          # forward, backward, clip, AdamW, schedule
            trainer.log_step(log_every, evaluated)       # the step log: train loss, lr, tokens/s (+ evaluated)
            if trainer.due(save_every) and not trainer.epoch_finished: trainer.save()
        trainer.end_epoch(trainer.epoch_metrics(), evaluated)   # history row, checkpoint

What the trainer hides: AdamW with linear warmup then linear decay, gradient accumulation and clipping,
bf16 autocast on CUDA, DDP under torchrun (each rank collates its slice of every global batch),
torch.compile, tqdm progress with loss and tokens/s, atomic checkpoints, exact resume (model, optimizer,
step, position in the epoch's batch plan, the running sums of the epoch's metrics, and every rank's RNG),
and a clean checkpoint-and-exit on Ctrl-C / SIGTERM (checked after each step).

A dataset has `__len__` and `collate(indices) -> dict of tensors` (with `input_ids`, whose real tokens
count for tokens/s); a model's `forward(**batch)` returns (loss, metrics), each metric a (sum, count) pair
so that averages stay exact across micro-batches, ranks and evaluation batches (the loss is computed inside
forward because the whole module is what DDP wraps). Under torchrun every rank runs the script's loop:
what that means for batch sizes, gradients, randomness, checkpoints and evaluation is in common/device.py.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from common.checkpoint import load_checkpoint, prev_path, save_checkpoint
from common.cli import (StopFlag, Stopped, UserError, add_gpu_option, add_vocab_option, non_negative_int, positive_int,
                        rel)
from common.device import (Runtime, any_rank, check_every_parameter_trained, gather_objects, rank_seed,
                           restore_rank_state, rng_state, use_deterministic_algorithms)
from common.evaluation import Dataset, add_metrics, reduce_metrics, to_device
from common.io import NoSpace
from common.tracking import add_tracking_args
from common.vocab import PAD_ID

# --- the training options: flags, settings, schedule, optimizer, resume checks ------------------------------

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
    prefetch: int = 2  # batches a background thread collates ahead of the step (0: in the step)

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
    parser.add_argument("--prefetch", type=non_negative_int, default=2,
                        help="batches a background thread collates ahead of the training step (0: in the step)")
    parser.add_argument("--deterministic", action="store_true",
                        help="CUDA: deterministic kernels (torch.use_deterministic_algorithms, a fixed cuBLAS "
                             "workspace), so that --resume is exact on a GPU too, at some speed (the CPU always is)")
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
    if args.deterministic:  # before CUDA starts: the cuBLAS workspace is read then
        use_deterministic_algorithms()
    if args.lr <= 0:
        raise UserError(f"--lr must be > 0, got {args.lr}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    if not 0 < args.beta2 < 1:
        raise UserError(f"--beta2 must be in (0, 1), got {args.beta2}")
    return TrainSettings(epochs=args.epoch, batch_size=args.batch, lr=args.lr, warmup=args.warmup,
                         weight_decay=args.weight_decay, grad_accum=args.grad_accum, seed=args.seed,
                         save_every=save_every, max_steps=args.max_steps, beta2=args.beta2, compile=args.compile,
                         prefetch=args.prefetch)


# --- batch plans: which instances go together, in which order (the same on every rank) ----------------------

def random_batches(n: int, batch_size: int, seed: int, epoch: int, drop_last: bool = True) -> list[np.ndarray]:
    """A seeded permutation of range(n) cut into batches; the same (seed, epoch) gives the same plan."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    stop = (n // batch_size) * batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                            pool_batches: int = 50, min_size: int = 1) -> list[np.ndarray]:
    """Batches of reviews of similar length, so little compute goes to padding.

    Shuffle, cut into pools of `pool_batches` batches, sort each pool by length,
    cut it into batches, then shuffle the batch order: randomness is kept at the
    pool level while the padding inside a batch is small.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    batches = [b for b in batches if len(b) >= min_size]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches: all reviews, sorted by length (least padding)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


STOP_CHECK_EVERY = 10  # steps between the ranks' agreement on a stop request under DDP


@dataclass
class Batch:
    """A global batch as this rank trains on it, collated on the host."""
    size: int  # instances in the global batch (all ranks)
    micro: list[tuple[int, dict[str, torch.Tensor]]]  # this rank's micro-batches: (instances, tensors)
    n_tokens: int  # real (non-[PAD]) tokens in them


@dataclass
class Progress:
    epoch: int = 0
    step_in_epoch: int = 0  # batches of the current epoch already done
    global_step: int = 0
    tokens_seen: int = 0  # real (non-[PAD]) tokens trained on, all ranks, up to the last step-log point


@dataclass
class Trainer:
    model: nn.Module
    settings: TrainSettings
    runtime: Runtime
    steps_per_epoch: int  # batches in one epoch's plan (every epoch's plan has as many)
    checkpoint_path: Path
    # Extra entries stored in every checkpoint (config, vocab fingerprint, args, kind...)
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)
    desc: str = "train"  # the progress bar's label
    tracker: Any = None  # TensorBoard / W&B (rank 0): every step-log point and history row go to it too

    def __post_init__(self) -> None:
        s, rt = self.settings, self.runtime
        if s.batch_size % (rt.world_size * s.grad_accum):
            raise UserError(
                f"--batch {s.batch_size} must be divisible by ranks x --grad_accum "
                f"({rt.world_size} x {s.grad_accum}); choose a multiple"
            )
        if self.steps_per_epoch == 0:
            raise UserError(f"not one batch of {s.batch_size} fits the training data; lower --batch")
        self.model.to(rt.device)
        self.train_module: nn.Module = self.model
        if rt.distributed:
            self.train_module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
            )
            if rt.rank > 0:  # independent dropout on each rank; rank 0 keeps the single-process stream
                torch.manual_seed(rank_seed(s.seed, rt.rank))
        if s.compile:  # the training step only; evaluation runs the plain module (no recompiles for eval mode)
            self.train_module = torch.compile(self.train_module)
        self.optimizer = make_optimizer(self.model, s.lr, s.weight_decay, fused=rt.device.type == "cuda", beta2=s.beta2)
        self.progress = Progress()
        self.total_steps = s.epochs * self.steps_per_epoch
        if s.max_steps:
            self.total_steps = min(self.total_steps, s.max_steps)
        self.warmup_steps = s.warmup_steps(self.total_steps)
        self.history: list[dict[str, Any]] = []  # one row per epoch (the .log.json)
        self.step_log: list[dict[str, Any]] = []  # one point every log_every steps (the .steps.csv)
        self.window = [0.0, 0, 0]  # this rank's training-loss sum, steps and tokens since the last logged point
        self.epoch_totals: dict[str, torch.Tensor] = {}  # this rank's (sum, count) metrics of the current epoch
        self._checked_gradients = False
        self.saved_step: int | None = None  # the step of the checkpoint on disk, once there is one
        # this epoch's seconds and rank's real tokens so far, kept apart from the deterministic progress and
        # checkpointed: a resumed epoch reports its whole time and tokens/s
        self.epoch_clock = {"time_s": 0.0, "tokens": 0}
        self._stop: StopFlag | None = None
        self._bar: tqdm | None = None
        self.data_wait_s = 0.0  # seconds the loop waited for a batch to be collated (bench: the overlap)
        self._shown_loss = "-"  # the progress bar's loss: the last step-log point's (read back there, not per step)
        self._epoch_start = 0.0
        self._epoch_length = 0  # batches in the current epoch's plan
        self._elapsed = 0.0  # the current epoch's training seconds, once its batches are done

    @property
    def done(self) -> bool:
        return self.progress.global_step >= self.total_steps

    @property
    def epoch_finished(self) -> bool:
        return self.progress.step_in_epoch >= self._epoch_length

    # --- the loop's pieces, in the order a script calls them ---------------------------------------
    def epochs(self) -> Iterator[int]:
        """The epochs left to train (a resumed run starts in the one it stopped in); SIGINT / SIGTERM
        while they run save a checkpoint and stop the run (`Stopped`), after the step at hand."""
        p = self.progress
        if p.global_step and self.runtime.is_main:
            print(f"resuming at epoch {p.epoch + 1}, step {p.step_in_epoch}/{self.steps_per_epoch} "
                  f"(global step {p.global_step})")
        self.train_module.train()
        with StopFlag(announce=self.runtime.is_main) as self._stop:
            while p.epoch < self.settings.epochs and not self.done:
                yield p.epoch

    def batches(self, dataset: Dataset, plan: list[np.ndarray]) -> Iterator[Batch]:
        """The batches of this epoch's plan still to train (capped by --max_steps), collated by a background
        thread `prefetch` batches ahead of the step (0: when the step needs them), with a progress bar."""
        p, rt = self.progress, self.runtime
        self._epoch_length = len(plan)
        first, end = p.step_in_epoch, min(len(plan), p.step_in_epoch + self.total_steps - p.global_step)
        plan_start = p.global_step - first  # the global step of plan[0]
        self._bar = tqdm(total=end, initial=first, desc=f"{self.desc} {p.epoch + 1}/{self.settings.epochs}",
                         disable=not rt.is_main, dynamic_ncols=True, mininterval=1.0)
        self._epoch_start = time.perf_counter() - self.epoch_clock["time_s"]
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collate") if self.settings.prefetch else None
        queued: deque[Future] = deque()
        ahead = first  # the next plan position to hand to the thread
        try:
            with self._bar:  # closed on any exit, so an error message starts on a line of its own
                while p.step_in_epoch < len(plan) and not self.done:
                    while pool is not None and ahead < end and len(queued) <= self.settings.prefetch:
                        queued.append(pool.submit(self.make_batch, dataset, plan[ahead], plan_start + ahead))
                        ahead += 1
                    waited = time.perf_counter()
                    batch = queued.popleft().result() if pool is not None else \
                        self.make_batch(dataset, plan[p.step_in_epoch], p.global_step)
                    self.data_wait_s += time.perf_counter() - waited
                    yield batch
                    # on the last step, finishing is quicker than stopping; under DDP the ranks agree on a stop
                    # every STOP_CHECK_EVERY steps (a collective that reads a value back)
                    if not self.done and (not rt.distributed or self.due(STOP_CHECK_EVERY)):
                        self._stop_if_requested()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._elapsed = time.perf_counter() - self._epoch_start

    def make_batch(self, dataset: Dataset, indices: np.ndarray, step: int) -> Batch:
        """This rank's slice of the global batch `indices`, cut into --grad_accum micro-batches and collated
        on the host (pinned for a non-blocking copy on CUDA). Any randomness of the batch (the encoders'
        masks) comes from a generator seeded by (--seed, step, the micro-batch's instances): the same batch
        whenever the thread makes it, on resume too, and independent of the training RNG (dropout)."""
        rt, s = self.runtime, self.settings
        mine = np.array_split(indices, rt.world_size)[rt.rank]
        micro, n_tokens = [], 0
        for mb in np.array_split(mine, s.grad_accum):
            tensors = dataset.collate(mb, np.random.default_rng([s.seed, step, *np.asarray(mb).tolist()]))
            n_tokens += int(np.count_nonzero(tensors["input_ids"].numpy() != PAD_ID))
            if rt.device.type == "cuda":
                tensors = {k: v.pin_memory() for k, v in tensors.items()}
            micro.append((len(mb), tensors))
        return Batch(len(indices), micro, n_tokens)

    def step(self, batch: Batch) -> torch.Tensor:
        """One optimizer step on a global batch (`batches` makes them): each of this rank's micro-batches
        forwarded (autocast) and backpropagated, then clipping, AdamW at the schedule's learning rate.
        Returns this rank's mean loss as a tensor (reading it would wait for the device)."""
        s, rt, p = self.settings, self.runtime, self.progress
        lr = s.lr * lr_factor(p.global_step, self.total_steps, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n_mine = sum(n for n, _ in batch.micro)
        loss_sum = 0.0  # (the loss stays a tensor on the device: no host read in the step)
        for i, (n, tensors) in enumerate(batch.micro):
            inputs = to_device(tensors, rt.device)
            # DDP averages gradients over ranks; weight each micro-batch by its share
            # of the global batch so any split gives the gradient of the global mean.
            weight = rt.world_size * n / batch.size
            sync = i == len(batch.micro) - 1 or not rt.distributed
            with (contextlib.nullcontext() if sync else self.train_module.no_sync()), rt.autocast():
                loss, metrics = self.train_module(**inputs)
            (loss * weight).backward()
            add_metrics(self.epoch_totals, metrics)
            loss_sum = loss_sum + loss.detach().to(torch.float64) * (n / n_mine)
        if not self._checked_gradients:  # after the first backward (see common/device.py)
            check_every_parameter_trained(self.model, self.runtime)
            self._checked_gradients = True
        if s.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

        p.step_in_epoch += 1
        p.global_step += 1
        tokens = self.epoch_clock["tokens"] + batch.n_tokens
        self.epoch_clock = {"time_s": time.perf_counter() - self._epoch_start, "tokens": tokens}
        self.window = [self.window[0] + loss_sum, self.window[1] + 1, self.window[2] + batch.n_tokens]
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=self._shown_loss, tok_s=f"{self.tokens_per_s:,.0f}", refresh=False)
        return loss_sum

    @property
    def tokens_per_s(self) -> float:
        """This epoch's real tokens per second so far, all ranks."""
        return self.epoch_clock["tokens"] * self.runtime.world_size / max(self.epoch_clock["time_s"], 1e-9)

    def due(self, every: int) -> bool:
        """Whether the step just taken is a multiple of `every` (0: never)."""
        return every > 0 and self.progress.global_step % every == 0

    def log_step(self, every: int, evaluated: dict[str, float] | None = None) -> None:
        """A point of the step log at every `every`-th step, at the last one, and wherever the script
        `evaluated` something (held-out or dev metrics for the curves): the mean training loss since the
        last point (all ranks), the learning rate and tokens/s, and those metrics. A collective."""
        step = self.progress.global_step
        if not (step % every == 0 or self.done or evaluated):
            return
        loss_sum, steps, tokens = (float(w) for w in self.window)  # the step's one read back, at log points
        if self.runtime.distributed:
            t = torch.tensor([loss_sum, steps, tokens], dtype=torch.float64, device=self.runtime.device)
            dist.all_reduce(t)
            loss_sum, steps, tokens = t.tolist()
        self.window = [0.0, 0, 0]
        self._shown_loss = f"{loss_sum / steps:.3f}"
        self.progress.tokens_seen += int(tokens)
        point: dict[str, Any] = {"step": step, "epoch": round(step / self.steps_per_epoch, 4),
                                 "tokens": self.progress.tokens_seen, "train_loss": loss_sum / steps,
                                 "lr": self.settings.lr * lr_factor(step - 1, self.total_steps, self.warmup_steps),
                                 "tokens_per_s": round(self.tokens_per_s, 1), **(evaluated or {})}
        self.step_log.append(point)
        if self.tracker is not None:
            names = {"train_loss": "train/loss", "lr": "train/lr", "tokens_per_s": "train/tokens_per_s",
                     "tokens": "train/tokens"}
            self.tracker.log({names.get(k, f"eval/{k}"): v for k, v in point.items() if k not in ("step", "epoch")},
                             step)

    def epoch_metrics(self) -> dict[str, float]:
        """The epoch's training metrics so far, averaged over all ranks (a collective)."""
        return reduce_metrics(self.epoch_totals, self.runtime)

    def end_epoch(self, train_metrics: dict[str, float], evaluated: dict[str, Any]) -> dict[str, Any]:
        """The epoch's row of the history (its training metrics, time and tokens/s, and what the script
        `evaluated`), then a checkpoint; returns the row. An epoch cut short by --max_steps or a signal
        stays the current one: a resumed run finishes it."""
        p, rt = self.progress, self.runtime
        row: dict[str, Any] = {"epoch": p.epoch + 1, "step": p.global_step,
                               **{f"train_{k}": v for k, v in train_metrics.items()},
                               "time_s": round(self._elapsed, 1),
                               "tokens_per_s": round(self.epoch_clock["tokens"] * rt.world_size / max(self._elapsed, 1e-9), 1),
                               **evaluated}
        self.history.append(row)
        if self.tracker is not None:
            self.tracker.log({f"epoch/{k}": v for k, v in row.items() if k not in ("epoch", "step")}, p.global_step)
        if self.epoch_finished:
            p.epoch, p.step_in_epoch = p.epoch + 1, 0
            self.epoch_clock = {"time_s": 0.0, "tokens": 0}
            self.epoch_totals = {}
        self.save()
        if not self.done and p.epoch < self.settings.epochs:  # a signal during evaluation: stop before the next epoch
            self._stop_if_requested()
        return row

    # --- checkpoints -------------------------------------------------------
    def state_dict(self, ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint; `ranks` holds each rank's `_rank_state()` (default: this process only)."""
        ranks = ranks if ranks is not None else [self._rank_state()]
        return {
            **self.checkpoint_meta,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "progress": asdict(self.progress),
            "settings": asdict(self.settings),
            "rng": ranks[0]["rng"],  # rank 0's, where older versions kept it
            "ranks": ranks,
            "history": self.history,
            "step_log": self.step_log,
            "epoch_clock": dict(self.epoch_clock),
        }

    def _rank_state(self) -> dict[str, Any]:
        return {"rng": rng_state(self.runtime.device),
                "totals": {k: torch.as_tensor(v).tolist() for k, v in self.epoch_totals.items()},
                "window": [float(w) for w in self.window]}

    def save(self) -> None:
        """Write the checkpoint (rank 0); a collective: every rank calls it and hands over its own state."""
        ranks = gather_objects(self._rank_state(), self.runtime)
        if self.runtime.is_main:
            try:
                save_checkpoint(self.checkpoint_path, self.state_dict(ranks))
            except NoSpace as e:  # say which step the checkpoint on disk holds, and how to go on from it
                if self.saved_step is None:
                    raise NoSpace(e.path, e.reason, "no checkpoint of this run was written yet") from None
                raise NoSpace(e.path, e.reason, f"the last checkpoint (step {self.saved_step}) is intact",
                              "run the same command with --resume") from None
            self.saved_step = self.progress.global_step

    def resume(self, state: dict[str, Any] | None = None) -> bool:
        """Continue from `checkpoint_path` (or `state`); returns False when there is none."""
        if state is None:
            if not self.checkpoint_path.is_file():
                return False
            state = load_checkpoint(self.checkpoint_path)
        if "optimizer" not in state:
            raise UserError(f"{self.checkpoint_path} holds no training state to resume from (it is a final model)")
        saved, now = state.get("settings", {}), asdict(self.settings)
        differ = [f"{flag} {now[k]} (checkpoint: {saved[k]})" for k, flag in RESUME_OPTIONS.items()
                  if k in saved and saved[k] != now[k]]
        if differ:
            raise UserError(f"--resume needs the options {self.checkpoint_path} was trained with, but "
                            f"{', '.join(differ)}; pass those, or another --save to start a new run")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(**state["progress"])
        self.saved_step = self.progress.global_step
        self.history = list(state.get("history", []))
        self.step_log = list(state.get("step_log", []))
        self.epoch_clock = dict(state.get("epoch_clock", {"time_s": 0.0, "tokens": 0}))
        totals, self.window = restore_rank_state(state, self.checkpoint_path, self.runtime, self.settings.seed)
        self.epoch_totals = {k: torch.tensor(v, dtype=torch.float64, device=self.runtime.device) for k, v in totals.items()}
        return True

    def _stop_if_requested(self) -> None:
        """If any rank got a signal, all save together and stop (a collective)."""
        stop = self._stop
        if stop is not None and any_rank(stop.requested, self.runtime):
            if self._bar is not None:
                self._bar.close()
            self.save()
            raise Stopped(f"{signal.Signals(stop.signum).name} at step {self.progress.global_step}: checkpoint "
                          f"saved to {self.checkpoint_path}; run the same command with --resume to continue",
                          stop.signum)
