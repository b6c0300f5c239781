"""Checkpoints: atomic saves, safe loads, and checks that a file fits the run.

A checkpoint is a plain dict of tensors and JSON-like values, loaded with
`torch.load(weights_only=True)` (the only torch.load in the project), so
opening a file can never execute code from it. Saving writes a temporary file,
syncs it to disk and renames it; the previous file is kept as `<name>.prev`
(a hard link made before the rename, so at every instant at least one complete
checkpoint exists under one of the two names), the fallback when the newest one
is found damaged or missing.
"""
from __future__ import annotations

import dataclasses
import io
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from common.cli import UserError
from common.config import ModelConfig
from common.io import atomic_path


def prev_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".prev")


class _WriteRecorder(io.RawIOBase):
    """A file torch.save writes through, keeping the OSError of a failed write.

    torch reports a failed write (a full disk) as a RuntimeError ("unexpected pos");
    through this wrapper the OSError behind it, with its errno, is known."""

    def __init__(self, file: io.BufferedWriter):
        self.file, self.error = file, None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], keep_previous: bool = True) -> None:
    """Write `state` atomically; a full disk raises `NoSpace` with `path` and its old version intact."""
    target = Path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            recorder = _WriteRecorder(f)
            try:
                torch.save(state, recorder)  # atomic_path syncs it to disk before the rename
            except RuntimeError:
                if recorder.error is not None:
                    raise recorder.error from None  # an OSError: atomic_path makes it a NoSpace when it is one
                raise
        if keep_previous and target.exists():
            _keep_as_previous(target)
    # atomic_path renamed tmp onto target


def _keep_as_previous(target: Path) -> None:
    """Make `<target>.prev` the current `target`, without a moment where `target` is missing."""
    prev = prev_path(target)
    prev.unlink(missing_ok=True)
    try:
        os.link(target, prev)  # the old file lives on as .prev when tmp is renamed onto target
    except OSError:  # a filesystem without hard links: copy (same result, slower)
        shutil.copy2(target, prev)


def _load(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError("not a checkpoint of this project")
    return state


def load_checkpoint(path: str | os.PathLike, fallback: bool = True) -> dict[str, Any]:
    """Load a checkpoint; if it is truncated or corrupt, say so and use `<name>.prev` when there is one."""
    p = Path(path)
    prev = prev_path(p)
    if not p.is_file():
        if fallback and prev.is_file():  # written by an older version that renamed instead of linking
            print(f"warning: {p} is missing; using the previous checkpoint {prev}", file=sys.stderr)
            return load_checkpoint(prev, fallback=False)
        raise UserError(f"checkpoint not found: {p} (check the path, or train one first)")
    try:
        return _load(p)
    except Exception as e:  # torch raises several types for a damaged zip/pickle
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()
        if fallback and prev.is_file():
            try:
                state = _load(prev)
            except Exception:
                pass
            else:
                print(f"warning: {p} is damaged ({reason}); using the previous checkpoint {prev}", file=sys.stderr)
                return state
        raise UserError(f"checkpoint {p} is damaged or not a checkpoint of this project ({reason}); delete it and train again")


def check_compatible(state: dict[str, Any], path: str | os.PathLike, config: dict, vocab_fingerprint: str, vocab_path: str | os.PathLike) -> None:
    """Refuse a checkpoint made with another vocab or another model shape."""
    saved_vocab = state.get("vocab", {})
    if saved_vocab.get("fingerprint") != vocab_fingerprint:
        raise UserError(
            f"{path} was trained with another vocab (size {saved_vocab.get('size')}, fingerprint "
            f"{saved_vocab.get('fingerprint')}) than {vocab_path} ({config.get('n_vocab')} pieces, {vocab_fingerprint}); "
            f"pass the --vocab it was trained with, or retrain"
        )
    # a key added to ModelConfig after the checkpoint was saved takes its default (e.g. rotary: false)
    saved = {**{f.name: f.default for f in dataclasses.fields(ModelConfig)}, **state.get("config", {})}
    diff = {k: (saved.get(k), v) for k, v in config.items() if k != "dropout" and saved.get(k) != v}
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())
        raise UserError(f"{path} does not match the config ({shown}); pass the --config it was trained with")


def load_compatible(path: str | os.PathLike, config: dict, vocab_fingerprint: str,
                    vocab_path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint at `path`, refused (one line naming what differs) unless it was trained with
    `config` and the same vocab: what a resumed run and a fine-tuning start both need."""
    state = load_checkpoint(path)
    check_compatible(state, path, config, vocab_fingerprint, vocab_path)
    return state


def module_state(state: dict[str, Any], name: str) -> dict[str, Tensor]:
    """The `<name>.*` weights of a saved model, with the prefix removed."""
    prefix = f"{name}."
    return {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
