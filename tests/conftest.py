"""Shared fixtures.

- `vocab_build`: the module vocab/build.py (a script, not a package: loaded by path).
- `sample_vocab`: the .model of a vocab built from the sample corpus (data/sample/kowiki),
  once per test session (well under a second).
- `corpus_dir`: the real corpora folder named by $CORPUS_DIR; skips the test where it is not set.
- `sample_corpus`: data/sample as the scripts' inputs: kowiki.json (articles kept by
  data/kowiki.py) and NSMC ratings_train.json / ratings_test.json, once per session.
- `gpt_store`: GPT's token store of `sample_corpus` with `sample_vocab`, n_seq 32 (353 windows).
- `write_config(path, **changes)`: a tiny GPT config (`TINY_GPT`, n_seq 32) written to `path`.
- `padded(seqs)`: token lists as a right-padded batch (input_ids, attention_mask).
- `run_script(script, *args, cwd=...)`: a repository script as a subprocess, as a user runs it,
  in `script_env`: this checkout on the path, CPU only, one thread (tiny models; threads would only contend).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.cli import REPO_ROOT, SAMPLE_DIR
from common.cli import corpus_dir as _corpus_dir

TINY_GPT = {"n_layer": 2, "d_hidn": 32, "n_head": 2, "d_ff": 64, "n_seq": 32, "dropout": 0.1}


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
    return vocab_build.train(kowiki_json, folder / "sample", vocab_build.SpmSettings(threads=1), log=lambda *_: None)


@pytest.fixture
def corpus_dir() -> Path:
    path = _corpus_dir()
    if path is None:
        pytest.skip("CORPUS_DIR not set: real corpora absent")
    if not path.is_dir():
        pytest.fail(f"CORPUS_DIR={path} is not a folder")
    return path


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> dict[str, Path]:
    from common.corpus import iter_wikiextractor, skip_reason
    from common.nsmc import read_nsmc_tsv

    folder = tmp_path_factory.mktemp("sample_corpus")
    with open(folder / "kowiki.json", "w", encoding="utf-8") as f:
        for article in iter_wikiextractor(SAMPLE_DIR / "kowiki"):
            if skip_reason(article) is None:
                f.write(json.dumps(article, ensure_ascii=False) + "\n")
    for part in ("train", "test"):
        rows, _ = read_nsmc_tsv(SAMPLE_DIR / "nsmc" / f"ratings_{part}.txt")
        with open(folder / f"ratings_{part}.json", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return {"kowiki": folder / "kowiki.json", "train": folder / "ratings_train.json",
            "test": folder / "ratings_test.json"}


@pytest.fixture(scope="session")
def gpt_store(tmp_path_factory, sample_corpus: dict[str, Path], sample_vocab: Path) -> Path:
    from gpt.data import build

    out = tmp_path_factory.mktemp("gpt_store") / "store"
    build(str(sample_corpus["kowiki"]), str(out), TINY_GPT["n_seq"], str(sample_vocab), workers=1)
    return out


@pytest.fixture(scope="session")
def write_config():
    def write(path: Path, **changes) -> Path:
        path.write_text(json.dumps({**TINY_GPT, **changes}), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def script_env() -> dict[str, str]:
    """The environment of a script run by a test: this checkout first on the path, CPU only, one thread."""
    env = {k: v for k, v in os.environ.items() if k != "CORPUS_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


@pytest.fixture(scope="session")
def run_script(script_env: dict[str, str]):
    def run(script: str | Path, *args: str | Path, cwd: Path = REPO_ROOT / "gpt",
            timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, env=script_env,
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def padded():
    """`padded(seqs)` -> (input_ids right-padded with [PAD], attention_mask): token lists as a model batch."""
    import torch

    from common.vocab import PAD_ID

    def pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        T = max(map(len, seqs))
        ids = torch.full((len(seqs), T), PAD_ID)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        return ids, (ids != PAD_ID).long()

    return pad
