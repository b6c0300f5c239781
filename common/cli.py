"""Command-line plumbing shared by every script, and where things are (the repository, data, vocab).

Every script builds its parser with `make_parser` (so `--help` shows each
default) and runs its body through `run_main`, which turns a `UserError` into a
one-line message on stderr and exit code 2, with no traceback. A bad option
(argparse's own errors: an unknown flag, `--batch 0`) gets the same treatment:
one `error: ...` line and exit code 2, not the usage block, so every bad input
reads the same way (README "Bad input").
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

# --- where things are: the repository, its data, the real corpora -------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
SAMPLE_DIR = DATA_DIR / "sample"
DOWNLOAD_DIR = DATA_DIR / "download"
VOCAB_DIR = REPO_ROOT / "vocab"

KOWIKI_JSON = DATA_DIR / "kowiki.json"
NSMC_TRAIN_JSON = DATA_DIR / "ratings_train.json"
NSMC_TEST_JSON = DATA_DIR / "ratings_test.json"
DEFAULT_VOCAB = VOCAB_DIR / "kowiki.model"


def rel(path: Path) -> str:
    """`path` relative to the current directory when that is shorter (for --help and messages)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return relative if len(relative) < len(str(path)) else str(path)


def corpus_dir() -> Path | None:
    """The real corpora folder named by $CORPUS_DIR (see the README), or None."""
    value = os.environ.get("CORPUS_DIR")
    return Path(value) if value else None


class UserError(Exception):
    """A problem the user can fix (bad path, bad value, bad file).

    The message is one line that names the problem and the fix.
    """


class Stopped(UserError):
    """Training stopped on request (Ctrl-C / SIGTERM) after saving a checkpoint.

    Not a failure of the input, so it exits with the shell's convention for a
    signal, 128 + its number (130 for Ctrl-C, 143 for SIGTERM), rather than 2.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like a UserError; the full usage is one --help away.
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class _DefaultsOnce(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to an option's help unless the help already says its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if "(default:" in text else super()._get_help_string(action)


def make_parser(description: str) -> argparse.ArgumentParser:
    return _Parser(description=description, formatter_class=_DefaultsOnce)


def add_vocab_option(parser: argparse.ArgumentParser, help: str = "SentencePiece model") -> None:
    parser.add_argument("--vocab", default=rel(DEFAULT_VOCAB), help=help)


def add_gpu_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu", type=int, default=None, help="GPU index (default: cuda:0 if present, else CPU)")


def _number(text: str, cast: Callable[[str], Any], valid: Callable[[Any], bool], expected: str, must: str,
            show: Callable[[Any], str] = str) -> Any:
    """An argparse value: `text` as a number, else "expected <expected>"; out of range, "must be <must>"."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    if not valid(value):
        raise argparse.ArgumentTypeError(f"must be {must}, got {show(value)}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    return _number(text, int, lambda v: v > 0, "a positive integer", "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0", ">= 0")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (a loss weight, a dropout rate); nan and inf are refused."""
    return _number(text, float, lambda v: 0.0 <= v < float("inf"), "a number >= 0", "a number >= 0",
                   show=lambda v: f"{v:g}")


def probability(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    return _number(text, float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]", "in [0, 1]")


def require_file(path: str | os.PathLike, what: str, fix: str) -> Path:
    """Return `path` as a Path, or raise a UserError naming it and the fix."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p} ({fix})")
    return p


def require_output_dir(path: str | os.PathLike) -> Path:
    """Check that the folder an output file goes into exists."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output folder does not exist: {parent} (create it, or choose another path for {p.name})")
    return p


def run_main(main: Callable[[], object]) -> None:
    """Run a script's main(); user errors become one line and exit code 2."""
    try:
        main()
        _leave_process_group()
    except Stopped as e:
        _leave_process_group()
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank stops alike: say it once
            print(f"stopped: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # (common.io.NO_SPACE; io imports this module)
            raise
        # a write the project does not route through common.io (a library's own file): still one line
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: no space left{where} ({e.strerror}); free space, then run the same command", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _leave_process_group() -> None:
    """common.device.leave_process_group, when this script set up a process group (only common.device
    does); imported here, not at the top, because common.device imports this module."""
    device = sys.modules.get("common.device")
    if device is not None:
        device.leave_process_group()


class StopFlag:
    """Turns SIGINT/SIGTERM into a request to checkpoint and stop after the current step."""

    def __init__(self, announce: bool = True) -> None:
        self.requested = False
        self.signum = signal.SIGTERM.value  # what a rank that got no signal itself reports
        self.announce = announce  # under torchrun only rank 0 says it
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # second signal: give up at once
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then stopping",
                  file=sys.stderr)

    def __enter__(self) -> "StopFlag":
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
