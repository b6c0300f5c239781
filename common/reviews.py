"""NSMC reviews as a classifier's input (train.py, predict.py, bench): encoded with the model's special
tokens, right-padded batches, and batch orders that keep padding small."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from common.vocab import PAD_ID, Vocab


class ReviewDataset:
    """Encoded reviews; `collate` pads a batch on the right to its longest review."""

    def __init__(self, ids: list[np.ndarray], labels: np.ndarray):
        self.ids, self.labels = ids, labels
        self.lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, indices: np.ndarray) -> dict[str, Tensor]:
        T = int(self.lengths[indices].max())
        input_ids = np.full((len(indices), T), PAD_ID, dtype=np.int64)
        for row, i in enumerate(indices):
            input_ids[row, : self.lengths[i]] = self.ids[i]
        input_ids_t = torch.from_numpy(input_ids)
        return {"input_ids": input_ids_t, "attention_mask": (input_ids_t != PAD_ID).long(),
                "labels": torch.from_numpy(self.labels[indices].astype(np.int64))}


def encode_reviews(rows: list[dict], vocab: Vocab, wrap: Callable[[list[int], int], list[int]], n_seq: int) -> ReviewDataset:
    ids = vocab.encode_batch([r["document"] for r in rows])
    return ReviewDataset([np.asarray(wrap(x, n_seq), dtype=np.int64) for x in ids],
                         np.asarray([r["label"] for r in rows], dtype=np.int64))


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
