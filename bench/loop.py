"""Case 6, the training loop as every pretrain.py runs it (common/trainer.py), per model.

- Overlap: the loop over batches of the model's store, its collate slowed on purpose by a sleep as long as
  one training step, so that collating takes as long as computing; the share of the loop's time spent
  waiting for a batch when the step collates it (--prefetch 0: the loop before the background thread) and
  when the thread collates ahead (--prefetch 2). The first batch has nothing to overlap with: the share is
  given over the whole loop and over the steps after the first.
- Speed: the same loop without the sleep, tokens/s at --prefetch 0 and 2, interleaved (A B A B ...).
- Graphs: torch._dynamo.explain of the pretraining forward and loss (what --compile traces): graphs and
  breaks; one graph with no break means no host sync and no recompile from the data's shapes.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.context import Context
from bench.pretrain import pretraining
from common.evaluation import Dataset
from common.token_store import TokenStore
from common.trainer import Trainer, TrainSettings, random_batches


@dataclass
class LoopResult:
    model: str
    steps: int  # optimizer steps per timed loop
    step_ms: float  # a step of the loop without the sleep (median)
    wait_share: dict[int, tuple[float, float]]  # prefetch -> (share waiting over the loop, after the first step)
    tokens_per_s: dict[int, float]  # prefetch -> the loop's real tokens/s without the sleep (median)
    graphs: int
    graph_breaks: int


class Slowed:
    """A dataset whose collate sleeps `delay` seconds first (a stand-in for a costly collate)."""

    def __init__(self, dataset: Dataset, delay: float):
        self.dataset, self.delay = dataset, delay

    def __len__(self) -> int:
        return len(self.dataset)

    def collate(self, indices: np.ndarray, rng: np.random.Generator | None = None):
        time.sleep(self.delay)
        return self.dataset.collate(indices, rng)


def run_loop(ctx: Context, name: str, dataset: Dataset, prefetch: int, steps: int) -> tuple[float, float, float, int]:
    """The loop of pretrain.py for `steps` steps from a fresh model: (seconds, seconds waiting for data, of
    them the first batch's, real tokens)."""
    build_model, _, lr = pretraining(name)
    torch.manual_seed(ctx.settings.seed)
    model = build_model(ctx.config(name))
    settings = TrainSettings(epochs=1, batch_size=ctx.settings.pretrain_batch, lr=lr, max_steps=steps,
                             prefetch=prefetch, seed=ctx.settings.seed)
    plan = random_batches(len(dataset), settings.batch_size, settings.seed, 0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, settings, ctx.runtime, len(plan), Path(tmp) / "unused.pth", desc=f"{name} loop")
        first_wait = None
        start = time.perf_counter()
        for _ in trainer.epochs():
            for batch in trainer.batches(dataset, plan):
                if first_wait is None:
                    first_wait = trainer.data_wait_s
                trainer.step(batch)
            break  # one (capped) epoch; no evaluation, no checkpoint
        seconds = time.perf_counter() - start
    return seconds, trainer.data_wait_s, first_wait or 0.0, int(trainer.epoch_clock["tokens"])


def loop_case(ctx: Context, name: str) -> LoopResult:
    s = ctx.settings
    cfg = ctx.config(name)
    build_model, open_dataset, _ = pretraining(name)
    dataset = open_dataset(TokenStore(ctx.stores.build(name, 1).store), cfg)
    steps = s.loop_steps
    run_loop(ctx, name, dataset, 0, 1)  # warm-up (allocator, first-call costs)
    times: dict[int, list[float]] = {0: [], 2: []}
    tokens: dict[int, list[float]] = {0: [], 2: []}
    for _ in range(s.loop_reps):  # interleaved: background load hits both alike
        for prefetch in (0, 2):
            seconds, _, _, n_tokens = run_loop(ctx, name, dataset, prefetch, steps)
            times[prefetch].append(seconds)
            tokens[prefetch].append(n_tokens / seconds)
    step_s = statistics.median(times[2]) / steps
    slowed = Slowed(dataset, step_s)
    wait_share = {}
    for prefetch in (0, 2):
        seconds, waited, first, _ = run_loop(ctx, name, slowed, prefetch, steps)
        wait_share[prefetch] = (waited / seconds, (waited - first) / (seconds - first))
        ctx.log(f"{name} loop, collate slowed by {1000 * step_s:.0f} ms: prefetch {prefetch} waits "
                f"{100 * wait_share[prefetch][0]:.0f}% of the loop ({100 * wait_share[prefetch][1]:.0f}% after the first batch)")
    torch.manual_seed(s.seed)
    batch = dataset.collate(random_batches(len(dataset), s.pretrain_batch, s.seed, 0)[0], np.random.default_rng(0))
    explanation = torch._dynamo.explain(build_model(cfg))(**batch)
    return LoopResult(name, steps, 1000 * step_s, wait_share,
                      {p: statistics.median(v) for p, v in tokens.items()},
                      explanation.graph_count, explanation.graph_break_count)
