"""Shared fixtures.

- `vocab_build`: the module vocab/build.py (a script, not a package: loaded by path).
- `sample_vocab`: the .model of a vocab built from the sample corpus (data/sample/kowiki),
  once per test session (well under a second).
- `corpus_dir`: the real corpora folder named by $CORPUS_DIR; skips the test where it is not set.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from common.paths import REPO_ROOT, SAMPLE_DIR, corpus_dir as _corpus_dir


def load_script(relative_path: str, module_name: str):
    """Import a script such as vocab/build.py as a module (under a name no package uses)."""
    spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def vocab_build():
    return load_script("vocab/build.py", "kolm_vocab_build")


@pytest.fixture(scope="session")
def sample_vocab(tmp_path_factory, vocab_build) -> Path:
    from common.corpus import iter_wikiextractor

    folder = tmp_path_factory.mktemp("sample_vocab")
    kowiki_json = folder / "kowiki.json"
    with open(kowiki_json, "w", encoding="utf-8") as f:
        for article in iter_wikiextractor(SAMPLE_DIR / "kowiki"):
            f.write(json.dumps(article, ensure_ascii=False) + "\n")
    return vocab_build.train(kowiki_json, folder / "sample", threads=1, log=lambda *_: None)


@pytest.fixture
def corpus_dir() -> Path:
    path = _corpus_dir()
    if path is None:
        pytest.skip("CORPUS_DIR not set: real corpora absent")
    if not path.is_dir():
        pytest.fail(f"CORPUS_DIR={path} is not a folder")
    return path
