"""NSMC reviews as a classifier's input (train.py, predict.py, bench): encoded with the model's special
tokens, right-padded batches (their order: common/batches.py)."""
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
