"""Atomic file writes: write to a temporary file beside the target, sync it, then rename.

An interrupted run therefore never leaves a half-written file that a later run
would trust; the previous version (if any) stays intact until the rename.
Every file the project writes goes through here (checkpoints, results, logs,
plots, vocab, kowiki.json / NSMC JSON) or, for a token store, through a
temporary folder renamed whole (common/token_store.py).

A write that fails for want of space (a full disk, a quota, a file-size limit)
raises `NoSpace`: a one-line UserError naming the file, with the old version
still in place and the temporary file removed. A run that writes an output over
time (a checkpoint, a token store) holds `exclusive_output` on it, so a second
run on the same path is refused instead of overwriting the first one's files,
and removes the temporary files a killed run left there. JSON-lines inputs are
read through `iter_json_lines`, with the same one-line errors.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import glob
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from common.cli import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


# errno values that mean "no room to write": a full disk, a full quota, a file-size limit (RLIMIT_FSIZE)
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class NoSpace(UserError):
    """A write failed for want of space; the message names the file, what is intact and the fix."""

    def __init__(self, path: str | os.PathLike, reason: str,
                 kept: str = "the previous version, if any, is intact", fix: str = "run the same command"):
        self.path, self.reason = Path(path), reason
        super().__init__(f"no space left writing {path} ({reason}): {kept}; free space, then {fix}")


def is_no_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in NO_SPACE


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or Path("."))
    except OSError as e:
        if is_no_space(e):
            raise NoSpace(target, e.strerror) from None
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "r+b") as f:  # whatever wrote it (torch.save, savefig, ...): on disk before the rename
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    except OSError as e:
        if is_no_space(e):
            raise NoSpace(target, e.strerror) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces `path` only if the block succeeds."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def lock_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(f".{p.name}.lock")


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike, option: str = "--save",
                     companions: tuple[str | os.PathLike, ...] = ()) -> Iterator[list[Path]]:
    """Hold an exclusive lock on the output `path` for the block; yields the leftovers it removed.

    The lock is `flock` on `.<name>.lock` beside it: the OS releases it when the
    process dies, however it dies, so a killed run never blocks the next one. A
    second run on the same path gets a UserError naming the path and the holder.
    Holding the lock, the temporary files `.<name>.*.tmp` (files or folders) that
    a run killed in the middle of a write left beside `path` (and beside each of
    `companions`, the other files the run writes: its log, its training state)
    are removed: no live run can be writing them.
    """
    target = Path(path)
    lock = lock_path(target)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{target} is being written by another run ({holder}); wait for it to finish, "
                            f"or pass another {option}") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:  # the holder removed it as we opened it
            same = False
        if same:
            break
        os.close(fd)  # we locked a file its last holder had just removed: lock the one now there
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        removed = []
        for output in (target, *map(Path, companions)):
            for leftover in sorted(output.parent.glob(f".{glob.escape(output.name)}.*.tmp")):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
                removed.append(leftover)
        yield removed
    finally:
        lock.unlink(missing_ok=True)  # before the lock is released: a waiting run re-checks the inode
        os.close(fd)


def iter_json_lines(path: Path, fix: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line of a JSON-lines file."""
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{number}: not JSON ({e.msg}); {fix} again") from None
                if not isinstance(obj, dict):
                    raise UserError(f"{path}:{number}: expected a JSON object; {fix} again")
                yield number, obj
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason}); {fix} again") from None


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    p = Path(path)
    if not p.is_file():
        return []
    with open(p, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
