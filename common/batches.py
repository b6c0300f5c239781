"""Batch plans: which instances go together, in which order. The trainer takes a plan as a function
epoch -> list of index arrays, the same on every rank (each collates its slice of every batch)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

BatchPlan = Callable[[int], list[np.ndarray]]


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
