"""Readers of the Naver Sentiment Movie Corpus (NSMC), its one train / dev split, and the reviews as a
classifier's input (encoded with the model's special tokens, right-padded batches).

NSMC comes as the published TSV (`id<TAB>document<TAB>label`, quoting off);
`data/nsmc.py` turns it into JSON lines `{"id": str, "document": str, "label": int}`.
Every reader raises `common.cli.UserError` (one line, naming the file and the
fix) for a missing or malformed file, never a traceback.
"""
from __future__ import annotations

import collections
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from common.cli import DATA_DIR, SAMPLE_DIR, UserError, rel
from common.io import iter_json_lines
from common.vocab import PAD_ID, Vocab

NSMC_HEADER = ["id", "document", "label"]
NSMC_TSV_FIX = (
    f"run python {rel(DATA_DIR / 'download.py')} --only nsmc, or use the sample in {rel(SAMPLE_DIR / 'nsmc')}"
)
NSMC_JSON_FIX = f"run python {rel(DATA_DIR / 'nsmc.py')}"

# Reasons a TSV row is skipped, as counted by read_nsmc_tsv.
SKIP_EMPTY = "empty document"
SKIP_BAD_LABEL = "bad label"
SKIP_COLUMNS = "wrong column count"


def read_nsmc_tsv(path: str | os.PathLike) -> tuple[list[dict], collections.Counter]:
    """Read an NSMC TSV file as published (`ratings_train.txt`, `ratings_test.txt`).

    Tab separated with the header `id<TAB>document<TAB>label`; quoting is off
    (csv.QUOTE_NONE): a quote is a literal character of the review, and the
    doubled quotes some reviews hold stay doubled. Returns the rows `{"id": str,
    "document": str, "label": 0 or 1}` and a Counter of skipped rows by reason
    ("empty document", "bad label", "wrong column count").
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"NSMC file not found: {path} ({NSMC_TSV_FIX})")
    rows: list[dict] = []
    skipped: collections.Counter = collections.Counter()
    try:
        # newline="" keeps a stray \r inside a review instead of splitting on it.
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = f.readline().rstrip("\r\n").split("\t")
            if header != NSMC_HEADER:
                raise UserError(
                    f"{path}:1: missing the NSMC header 'id<TAB>document<TAB>label' "
                    f"(got {'<TAB>'.join(header)[:60]!r}); is this an NSMC ratings file?"
                )
            for line in f:
                fields = line.rstrip("\r\n").split("\t")
                if len(fields) != 3:
                    if line.strip():  # a blank line (e.g. at the end) is not a row
                        skipped[SKIP_COLUMNS] += 1
                    continue
                review_id, document, label = fields
                if label not in ("0", "1"):
                    skipped[SKIP_BAD_LABEL] += 1
                elif not document.strip():
                    skipped[SKIP_EMPTY] += 1
                else:
                    rows.append({"id": review_id, "document": document, "label": int(label)})
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason}); {NSMC_TSV_FIX}") from None
    return rows, skipped


NSMC_DEV_SIZE = 5000  # dev reviews of the full train file: the same for every run, model and label count


def nsmc_split(n: int, dev_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train pool, dev) indices of an NSMC train file of n reviews, both sorted.

    The dev set is a fixed random `dev_size` reviews (default: NSMC_DEV_SIZE, or
    5% of a smaller file), drawn with seed 0 from the whole file: one dev set for
    every run whatever its number of labelled reviews, so that epochs are picked
    on a dev set of the same size for every arm. Labelled subsets
    (`labelled_subset`) and the review text added to pretraining
    (`common.prep.pretraining_reviews`) come from the pool only.
    """
    if dev_size is None:
        dev_size = min(NSMC_DEV_SIZE, int(round(n * 0.05)))
    if not 0 < dev_size < n / 2:
        raise UserError(f"--dev_size {dev_size} does not fit a train file of {n} reviews "
                        f"(choose 1 to {max(1, (n - 1) // 2)})")
    order = np.random.default_rng(0).permutation(n)
    return np.sort(order[dev_size:]), np.sort(order[:dev_size])


def labelled_subset(pool: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` reviews of the pool, drawn with `seed` (sorted); the whole pool when size is 0 or larger.

    A seed picks both the subset and (in train.py) the initialization: the spread
    over seeds at a small label count includes which reviews were labelled."""
    if not size or size >= len(pool):
        return pool
    return np.sort(np.random.default_rng([seed, size]).choice(pool, size, replace=False))


def read_nsmc_json(path: str | os.PathLike) -> list[dict]:
    """Read the JSON-lines file `data/nsmc.py` writes: `{"id", "document", "label"}` per line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"NSMC JSON not found: {path} ({NSMC_JSON_FIX} first)")
    rows = []
    for number, row in iter_json_lines(path, NSMC_JSON_FIX):
        if not (isinstance(row.get("id"), str) and isinstance(row.get("document"), str)):
            raise UserError(f"{path}:{number}: expected id and document strings; {NSMC_JSON_FIX} again")
        label = row.get("label")
        # `type(...) is int` rejects true/false and 1.0 too.
        if type(label) is not int or label not in (0, 1):
            raise UserError(f"{path}:{number}: label must be 0 or 1, got {label!r}; {NSMC_JSON_FIX} again")
        rows.append({"id": row["id"], "document": row["document"], "label": label})
    return rows


# --- NSMC reviews as a classifier's input: encoded with the model's special tokens, right-padded batches ----

class ReviewDataset:
    """Encoded reviews; `collate` pads a batch on the right to its longest review."""

    def __init__(self, ids: list[np.ndarray], labels: np.ndarray):
        self.ids, self.labels = ids, labels
        self.lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, Tensor]:
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
