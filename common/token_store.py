"""Flat on-disk arrays read back with `np.memmap` (the nanoGPT way).

A store is a folder: one raw `<name>.bin` file per array plus `meta.json`
(dtype and shape of each array, and whatever the writer records: vocab
fingerprint, n_seq, counts). Loading maps the files, so memory does not grow
with the corpus. The folder is written under a temporary name and renamed at
the end: an interrupted data.py never leaves a store that looks complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from common.cli import UserError
from common.io import _UMASK, NoSpace, exclusive_output, is_no_space

META = "meta.json"


class StoreWriter:
    """Append chunks to named arrays; `close()` publishes the store atomically.

    Arrays are 1-D, or 2-D with a fixed row width (chunks are appended row-wise).
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any] | None = None):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise UserError(f"output folder does not exist: {self.path.parent} (create it, or pass another --output)")
        # a second data.py on this store is refused; a killed one's temporary folder is removed
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(exclusive_output(self.path, option="--output"))
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent))
        os.chmod(self.tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the published store gets the usual permissions
        self.meta: dict[str, Any] = dict(meta or {})
        self.files: dict[str, BinaryIO] = {}
        self.specs: dict[str, dict[str, Any]] = {}

    def _no_space(self, e: OSError) -> NoSpace:
        return NoSpace(self.path, e.strerror, "no store was written there (the partial one is removed)")

    def append(self, name: str, chunk: np.ndarray) -> None:
        try:
            self._append(name, chunk)
        except OSError as e:
            if is_no_space(e):
                raise self._no_space(e) from None
            raise

    def _append(self, name: str, chunk: np.ndarray) -> None:
        if name not in self.files:
            self.files[name] = open(self.tmp / f"{name}.bin", "wb")
            self.specs[name] = {"dtype": chunk.dtype.str, "shape": [0, *chunk.shape[1:]]}
        spec = self.specs[name]
        if chunk.dtype.str != spec["dtype"] or list(chunk.shape[1:]) != spec["shape"][1:]:
            raise ValueError(f"{name}: chunk {chunk.dtype}{chunk.shape} does not match {spec}")
        self.files[name].write(np.ascontiguousarray(chunk).tobytes())
        spec["shape"][0] += chunk.shape[0]

    def append_instances(self, rows: list[np.ndarray], dtype: type = np.uint16) -> int:
        """Append variable-length instances to `tokens` and their end boundaries to `offsets`
        (which starts with 0: instance i is tokens[offsets[i]:offsets[i+1]]); returns the tokens written."""
        if "offsets" not in self.specs:
            self.append("offsets", np.zeros(1, dtype=np.int64))
        start = self.specs["tokens"]["shape"][0] if "tokens" in self.specs else 0
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        self.append("tokens", np.concatenate(rows).astype(dtype))
        self.append("offsets", start + np.cumsum(lengths))
        return int(lengths.sum())

    def write_instances(self, instances: Iterable[tuple[np.ndarray, dict[str, int]]],
                        columns: dict[str, type] | None = None, block: int = 4096) -> tuple[int, int]:
        """Append a stream of (token ids, per-instance values) with `append_instances`, the values of
        `columns` (name -> dtype, e.g. BERT's len_a) as arrays beside them, `block` instances at a time
        (bounded memory); returns (instances, tokens) written."""
        columns = columns or {}
        rows: list[np.ndarray] = []
        values: dict[str, list[int]] = {name: [] for name in columns}
        n_instances = n_tokens = 0

        def flush() -> None:
            nonlocal n_instances, n_tokens
            n_instances, n_tokens = n_instances + len(rows), n_tokens + self.append_instances(rows)
            for name, dtype in columns.items():
                self.append(name, np.asarray(values[name], dtype=dtype))
                values[name].clear()
            rows.clear()

        for ids, extra in instances:
            rows.append(ids)
            for name in columns:
                values[name].append(extra[name])
            if len(rows) >= block:
                flush()
        if rows:
            flush()
        return n_instances, n_tokens

    def close(self) -> None:
        try:
            self._close()
        except OSError as e:
            self.abort()
            if is_no_space(e):
                raise self._no_space(e) from None
            raise

    def _close(self) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename publishes the store
            f.close()
        # Inside the temporary folder: it becomes visible only with the folder's rename below.
        with open(self.tmp / META, "w", encoding="utf-8") as f:
            json.dump({**self.meta, "arrays": self.specs}, f, ensure_ascii=False, indent=2)
            f.flush()
            os.fsync(f.fileno())
        old = None
        if self.path.exists():  # only reached with --force: move the old store aside, then delete it
            old = self.path.with_name(f".{self.path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._lock.close()

    def abort(self) -> None:
        for f in self.files.values():
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._lock.close()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class TokenStore:
    """A store opened read-only: `store.meta`, `store["tokens"]` (a np.memmap)."""

    def __init__(self, path: str | os.PathLike, hint: str = "run python data.py first"):
        self.path = Path(path)
        meta_file = self.path / META
        if not meta_file.is_file():
            raise UserError(f"pretraining data not found: {self.path} ({hint})")
        try:
            self.meta: dict[str, Any] = json.loads(meta_file.read_text(encoding="utf-8"))
            specs = self.meta["arrays"]
        except (json.JSONDecodeError, KeyError):
            raise UserError(f"{meta_file} is damaged (delete {self.path} and {hint})")
        self.arrays: dict[str, np.ndarray] = {}
        for name, spec in specs.items():
            file = self.path / f"{name}.bin"
            dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
            expected = int(np.prod(shape)) * dtype.itemsize
            if not file.is_file() or file.stat().st_size != expected:
                raise UserError(f"{file} is missing or truncated (delete {self.path} and {hint})")
            self.arrays[name] = (np.memmap(file, dtype=dtype, mode="r", shape=shape) if expected
                                 else np.zeros(shape, dtype=dtype))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def check_n_seq(self, config_n_seq: int) -> int:
        """The store's instance length, refused if the model's position table is shorter."""
        n_seq = int(self.meta["n_seq"])
        if n_seq > config_n_seq:
            raise UserError(f"{self.path} was built with --n_seq {n_seq} but the config allows {config_n_seq} "
                            f"(rebuild with python data.py --n_seq {config_n_seq} --force, or use a config with a larger n_seq)")
        return n_seq

    def check_vocab(self, fingerprint: str, vocab_path: str | os.PathLike) -> None:
        if self.meta.get("vocab_fingerprint") != fingerprint:
            raise UserError(f"{self.path} was built with another vocab than {vocab_path}; "
                            f"rebuild it with python data.py --force (or pass the matching --vocab)")


def token_counts(tokens: np.ndarray, n_vocab: int, chunk: int = 1 << 24) -> np.ndarray:
    """How often each id occurs in a (memory-mapped) token array: (n_vocab,) int64.

    Counted `chunk` tokens at a time, so memory stays flat however long the array is.
    """
    counts = np.zeros(n_vocab, dtype=np.int64)
    for start in range(0, len(tokens), chunk):
        part = np.asarray(tokens[start : start + chunk])
        if part.size and int(part.max()) >= n_vocab:
            raise ValueError(f"token id {int(part.max())} is outside the vocab of {n_vocab}")
        counts += np.bincount(part, minlength=n_vocab)
    return counts
