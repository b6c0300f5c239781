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
(model, optimizer, step, position in the epoch's batch plan, the running sums
of the epoch's metrics, and every rank's RNG), and a clean checkpoint-and-exit
on Ctrl-C / SIGTERM.

Under torchrun every rank runs this loop on its slice of each global batch: what
that means for batch sizes, gradients, randomness, checkpoints and evaluation is
set out in common/device.py.
"""
from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from common.batches import BatchPlan
from common.checkpoint import load_checkpoint, save_checkpoint
from common.cli import StopFlag, Stopped, UserError
from common.device import (Runtime, any_rank, check_every_parameter_trained, gather_objects, rank_seed,
                           restore_rank_state, rng_state)
from common.evaluation import Dataset, add_metrics, reduce_metrics, to_device
from common.io import NoSpace
from common.train_options import RESUME_OPTIONS, TrainSettings, lr_factor, make_optimizer
from common.vocab import PAD_ID

@dataclass
class Progress:
    epoch: int = 0
    step_in_epoch: int = 0  # batches of the current epoch already done
    global_step: int = 0
    tokens_seen: int = 0  # real (non-[PAD]) tokens trained on, all ranks, up to the last step-log point


@dataclass
class Trainer:
    model: nn.Module
    train_set: Dataset
    batch_plan: BatchPlan
    settings: TrainSettings
    runtime: Runtime
    checkpoint_path: Path
    # Extra entries stored in every checkpoint (config, vocab fingerprint, args, kind...)
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)
    # Called by every rank after each epoch with (epoch, train metrics); returns
    # the metrics to log. Evaluation happens here.
    on_epoch_end: Callable[[int, dict[str, float]], dict[str, Any]] | None = None
    desc: str = "train"
    # The step log (`step_log`, kept in the checkpoint): every `log_every` steps the mean
    # training loss since the last point (all ranks), the learning rate and tokens/s; and
    # every `evaluate_every` steps (0: never) what `evaluate_now()` returns (held-out or
    # dev metrics, for the curves; epoch ends still go through on_epoch_end). Each point
    # also goes to `tracker` (TensorBoard / W&B, rank 0) when one is set.
    log_every: int = 10
    evaluate_every: int = 0
    evaluate_now: Callable[[], dict[str, float]] | None = None
    tracker: Any = None

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
            if rt.rank > 0:  # independent dropout on each rank; rank 0 keeps the single-process stream
                torch.manual_seed(rank_seed(s.seed, rt.rank))
        if s.compile:  # the training step only; evaluation runs the plain module (no recompiles for eval mode)
            self.train_module = torch.compile(self.train_module)
        self.optimizer = make_optimizer(self.model, s.lr, s.weight_decay, fused=rt.device.type == "cuda", beta2=s.beta2)
        self.progress = Progress()
        self.steps_per_epoch = len(self.batch_plan(0))
        if self.steps_per_epoch == 0:
            raise UserError(f"not one batch of {s.batch_size} fits the training data ({len(self.train_set)} instances); lower --batch")
        self.total_steps = s.epochs * self.steps_per_epoch
        if s.max_steps:
            self.total_steps = min(self.total_steps, s.max_steps)
        self.warmup_steps = s.warmup_steps(self.total_steps)
        self.history: list[dict[str, Any]] = []
        self.step_log: list[dict[str, Any]] = []
        self.window = [0.0, 0, 0]  # this rank's training-loss sum, steps and tokens since the last logged point
        self.epoch_totals: dict[str, list[float]] = {}  # this rank's (sum, count) metrics of the current epoch
        self._checked_gradients = False
        self.saved_step: int | None = None  # the step of the checkpoint on disk, once there is one
        # this epoch's seconds and rank's real tokens so far, kept apart from the deterministic progress and
        # checkpointed: a resumed epoch reports its whole time and tokens/s
        self.epoch_clock = {"time_s": 0.0, "tokens": 0}

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
        return {"rng": rng_state(self.runtime.device), "totals": {k: list(v) for k, v in self.epoch_totals.items()},
                "window": list(self.window)}

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
        self.epoch_totals, self.window = restore_rank_state(state, self.checkpoint_path, self.runtime,
                                                            self.settings.seed)
        return True

    # --- the loop ------------------------------------------------------------
    def _done(self) -> bool:
        return self.progress.global_step >= self.total_steps

    def _stop_if_requested(self, stop: StopFlag, bar: tqdm | None = None) -> None:
        """After a step: if any rank got a signal, all save together and stop (a collective)."""
        if any_rank(stop.requested, self.runtime):
            if bar is not None:
                bar.close()
            self.save()
            raise Stopped(f"{signal.Signals(stop.signum).name} at step {self.progress.global_step}: checkpoint "
                          f"saved to {self.checkpoint_path}; run the same command with --resume to continue",
                          stop.signum)

    def fit(self) -> list[dict[str, Any]]:
        s, rt, p = self.settings, self.runtime, self.progress
        model = self.train_module
        model.train()
        if p.global_step and rt.is_main:
            print(f"resuming at epoch {p.epoch + 1}, step {p.step_in_epoch}/{self.steps_per_epoch} "
                  f"(global step {p.global_step})")
        with StopFlag(announce=rt.is_main) as stop:
            while p.epoch < s.epochs and not self._done():
                plan = self.batch_plan(p.epoch)
                totals = self.epoch_totals  # restored by resume() mid-epoch, else empty
                steps_this_epoch = min(len(plan), p.step_in_epoch + self.total_steps - p.global_step)
                bar = tqdm(total=steps_this_epoch, initial=p.step_in_epoch, desc=f"{self.desc} {p.epoch + 1}/{s.epochs}",
                           disable=not rt.is_main, dynamic_ncols=True, mininterval=1.0)
                t0, tokens, loss_ema = time.perf_counter() - self.epoch_clock["time_s"], self.epoch_clock["tokens"], None
                with bar:  # closed on any exit, so an error message starts on a line of its own
                    while p.step_in_epoch < len(plan) and not self._done():
                        loss, n_tokens = self._step(model, plan[p.step_in_epoch], totals)
                        p.step_in_epoch += 1
                        p.global_step += 1
                        tokens += n_tokens
                        self.epoch_clock = {"time_s": time.perf_counter() - t0, "tokens": tokens}
                        loss_ema = loss if loss_ema is None else 0.98 * loss_ema + 0.02 * loss
                        tokens_per_s = tokens * rt.world_size / (time.perf_counter() - t0)
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss_ema:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
                        self.window[0] += loss
                        self.window[1] += 1
                        self.window[2] += n_tokens
                        self._log_point(tokens_per_s)
                        if not self._done():  # on the last step, finishing is quicker than stopping
                            self._stop_if_requested(stop, bar)
                        if s.save_every and p.global_step % s.save_every == 0 and p.step_in_epoch < len(plan):
                            self.save()
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
                if self.tracker is not None:
                    self.tracker.log({f"epoch/{k}": v for k, v in row.items() if k not in ("epoch", "step")}, p.global_step)
                if epoch_finished:
                    p.epoch, p.step_in_epoch = p.epoch + 1, 0
                    self.epoch_clock = {"time_s": 0.0, "tokens": 0}
                    self.epoch_totals = {}
                self.save()
                if not self._done() and p.epoch < s.epochs:  # a signal during evaluation: stop before the next epoch
                    self._stop_if_requested(stop)
        return self.history

    def _log_point(self, tokens_per_s: float) -> None:
        """After a step: at every `log_every`-th step (and the last) a point of the step log (a collective)."""
        step = self.progress.global_step
        evaluate_now = self.evaluate_now is not None and self.evaluate_every and step % self.evaluate_every == 0
        if not (step % self.log_every == 0 or self._done() or evaluate_now):
            return
        loss_sum, steps, tokens = self.window
        if self.runtime.distributed:
            t = torch.tensor(self.window, dtype=torch.float64, device=self.runtime.device)
            dist.all_reduce(t)
            loss_sum, steps, tokens = t.tolist()
        self.window = [0.0, 0, 0]
        self.progress.tokens_seen += int(tokens)
        point: dict[str, Any] = {"step": step, "epoch": round(step / self.steps_per_epoch, 4),
                                 "tokens": self.progress.tokens_seen, "train_loss": loss_sum / steps,
                                 "lr": self.settings.lr * lr_factor(step - 1, self.total_steps, self.warmup_steps),
                                 "tokens_per_s": round(tokens_per_s, 1)}
        if evaluate_now:
            point.update(self.evaluate_now())
        self.step_log.append(point)
        if self.tracker is not None:
            names = {"train_loss": "train/loss", "lr": "train/lr", "tokens_per_s": "train/tokens_per_s",
                     "tokens": "train/tokens"}
            self.tracker.log({names.get(k, f"eval/{k}"): v for k, v in point.items() if k not in ("step", "epoch")},
                             step)

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
                loss, metrics = model(**batch)
            (loss * weight).backward()
            add_metrics(totals, metrics)
            loss_sum += float(loss.detach()) * len(mb) / len(mine)
        if not self._checked_gradients:  # after the first backward (see common/device.py)
            check_every_parameter_trained(self.model, self.runtime)
            self._checked_gradients = True
        if s.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, n_tokens
