"""Evaluation and the metric sums behind every reported number.

A model's forward returns (loss, metrics), each metric a (sum, count) pair, so
that averages stay exact across micro-batches, ranks and evaluation batches:
`add_metrics` adds a batch's pairs, `reduce_metrics` sums them over ranks and
divides once."""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from common.device import Runtime, gather_objects
from common.losses import Metrics


class Dataset(Protocol):
    """Instances by index; `collate` makes a batch of tensors on the host, drawing any randomness (the
    encoders' masks) from `rng` alone, so that a batch is the same whenever and wherever it is made."""
    def __len__(self) -> int: ...
    def collate(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, Tensor]: ...


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def reduce_metrics(totals: dict[str, Tensor], runtime: Runtime) -> dict[str, float]:
    """Sum (sum, count) pairs over ranks and return the averages.

    A metric no example had a target for (BERT's NSP on a store of reviews alone) is left out,
    not reported as NaN: the logs stay strict JSON and a missing head reads as missing."""
    names = sorted(totals)
    if runtime.distributed:
        # A rank that saw no batch (or no batch with some metric) still takes part, with zeros.
        names = sorted(set().union(*gather_objects(names, runtime)))
    zero = torch.zeros(2, dtype=torch.float64, device=runtime.device)
    t = torch.stack([torch.as_tensor(totals[n], dtype=torch.float64).to(runtime.device) if n in totals else zero
                     for n in names]) if names else zero.reshape(0, 2)
    if runtime.distributed:
        dist.all_reduce(t)
    values = dict(zip(names, t.tolist()))  # the one read back to the host, once per epoch or evaluation
    return {n: s / c for n, (s, c) in values.items() if c}


def add_metrics(totals: dict[str, Tensor], metrics: Metrics) -> None:
    """Add a batch's (sum, count) pairs to the running ones: float64 tensors on the metrics' device, so
    that a training step reads nothing back to the host (`reduce_metrics` does, once)."""
    for name, (s, c) in metrics.items():
        s = s.detach().to(torch.float64).reshape(())
        c = c.detach().to(s).reshape(()) if isinstance(c, Tensor) else s.new_tensor(float(c))
        pair = torch.stack([s, c])
        totals[name] = totals[name] + pair.to(totals[name].device) if name in totals else pair


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    """Metrics named for where they were measured (`heldout_loss`, `dev_acc`) in the logs."""
    return {f"{prefix}{k}": v for k, v in metrics.items()}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int, runtime: Runtime,
             batches: list[np.ndarray] | None = None, seed: int = 0) -> dict[str, float]:
    """Average every metric over `dataset` (all ranks together), in eval mode.

    Rank r takes batches r, r + world_size, ...; the sums are added over ranks,
    so the result does not depend on the number of ranks. Batch i's collate draws
    from a generator seeded with (seed, i): the same masks every epoch and on any
    number of ranks, and the training RNG stream is left as it was.
    """
    was_training = model.training
    model.eval()
    if batches is None:
        batches = [np.arange(i, min(i + batch_size, len(dataset))) for i in range(0, len(dataset), batch_size)]
    totals: dict[str, Tensor] = {}
    for i in range(runtime.rank, len(batches), runtime.world_size):
        batch = to_device(dataset.collate(batches[i], np.random.default_rng([seed, i])), runtime.device)
        with runtime.autocast():
            _, metrics = model(**batch)
        add_metrics(totals, metrics)
    model.train(was_training)
    return reduce_metrics(totals, runtime)
