"""Where things live by default. Paths are resolved from the repository root,
so every script works from any working directory (`python data.py` inside a
model folder, or `python gpt/data.py` from the root)."""
from __future__ import annotations

import os
from pathlib import Path

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
