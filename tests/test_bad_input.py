"""Bad input, through the real scripts: each row of README.md's "Bad input" table.

Every case runs its script as a subprocess in a folder of its own holding
(hard links to) the sample inputs: a vocab, GPT's token store, a tiny config,
kowiki.json, NSMC JSON files and a small pretraining checkpoint. It must exit
with code 2, print exactly one line on stderr, `error: ...`, holding the
expected words (the problem and the fix), print no traceback, and leave every
file of its folder as it was: no file changed, none added.

The cases run concurrently (one per CPU core): most of each one's time is
Python importing torch.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.cli import REPO_ROOT


@dataclass(frozen=True)
class Case:
    label: str  # the row of README.md's table
    script: str  # relative to the repository root
    args: tuple[str, ...]
    expect: tuple[str, ...]  # fragments of the one error line


DATA = ("--input", "kowiki.json", "--output", "new_store", "--vocab", "vocab.model", "--n_seq", "32", "--workers", "1")
PRETRAIN = ("--input", "store", "--vocab", "vocab.model", "--config", "tiny.json", "--save", "new.pth",
            "--batch", "8", "--max_steps", "2")
TRAIN = ("--train", "train.json", "--test", "test.json", "--vocab", "vocab.model", "--config", "tiny.json",
         "--pretrain", "pre.pth", "--save", "best.pth", "--results", "results.csv", "--epoch", "1", "--batch", "8")


def options(base: tuple[str, ...], *extra: str, **replace: str) -> tuple[str, ...]:
    """`base` with the values of some options replaced (`input="x"` replaces --input's value) and `extra` added."""
    out = list(base)
    for name, value in replace.items():
        out[out.index(f"--{name}") + 1] = value
    return (*out, *extra)


CASES = [
    Case("corpus file missing", "gpt/data.py", options(DATA, input="missing.json"),
         ("corpus not found: missing.json", "data/kowiki.py")),
    Case("empty corpus", "gpt/data.py", options(DATA, input="empty.json"), ("empty.json is empty", "data/kowiki.py")),
    Case("a kowiki.json line that is not JSON", "gpt/data.py", options(DATA, input="not_json.json"),
         ("not_json.json:2: not a kowiki.json article line", "data/kowiki.py")),
    Case("vocab file missing", "gpt/data.py", options(DATA, vocab="missing.model"),
         ("vocab not found: missing.model", "vocab/build.py")),
    Case("output folder missing (data.py --output)", "gpt/data.py", options(DATA, output="no_dir/store"),
         ("output folder does not exist: no_dir", "create it")),
    Case("existing data.py output built with another --n_seq", "gpt/data.py", options(DATA, output="store", n_seq="64"),
         ("store was built with --n_seq 32, not 64", "--force")),
    Case("config file missing", "gpt/pretrain.py", options(PRETRAIN, config="missing.json"),
         ("config not found: missing.json", "--config")),
    Case("token store missing", "gpt/pretrain.py", options(PRETRAIN, input="no_store"),
         ("pretraining data not found: no_store", "data.py")),
    Case("--n_seq of the data larger than the config allows", "gpt/pretrain.py", options(PRETRAIN, config="short.json"),
         ("built with --n_seq 32 but the config allows 16", "--n_seq 16 --force")),
    Case("token store built with another vocab", "gpt/pretrain.py", options(PRETRAIN, vocab="other.model"),
         ("store was built with another vocab than other.model", "--force")),
    Case("negative --batch", "gpt/pretrain.py", options(PRETRAIN, batch="-8"),
         ("argument --batch: must be a positive integer, got -8", "--help")),
    Case("zero --epoch", "gpt/pretrain.py", options(PRETRAIN, "--epoch", "0"),
         ("argument --epoch: must be a positive integer, got 0", "--help")),
    Case("unknown option", "gpt/pretrain.py", options(PRETRAIN, "--epochs", "3"),
         ("unrecognized arguments: --epochs 3", "--help")),
    Case("--gpu 7 on a machine without it", "gpt/pretrain.py", options(PRETRAIN, "--gpu", "7"),
         ("--gpu 7 does not exist", "omit --gpu")),
    Case("output folder missing (--save)", "gpt/pretrain.py", options(PRETRAIN, save="no_dir/new.pth"),
         ("output folder does not exist: no_dir", "create it")),
    Case("--save exists, without --resume", "gpt/pretrain.py", options(PRETRAIN, save="pre.pth"),
         ("pre.pth exists: pass --resume", "another --save")),
    Case("--resume with nothing to resume", "gpt/pretrain.py", options(PRETRAIN, "--resume"),
         ("nothing to resume: new.pth not found", "without --resume")),
    Case("--resume with other training options", "gpt/pretrain.py", options(PRETRAIN, "--resume", save="pre.pth", batch="16"),
         ("--batch 16 (checkpoint: 8)", "pass those")),
    Case("damaged checkpoint, no .prev", "gpt/pretrain.py", options(PRETRAIN, "--resume", save="damaged.pth"),
         ("checkpoint damaged.pth is damaged", "delete it")),
    Case("pretrained checkpoint missing", "gpt/train.py", options(TRAIN, pretrain="missing.pth"),
         ("pretrained checkpoint not found: missing.pth", "--pretrain none")),
    Case("vocab whose size differs from the checkpoint's", "gpt/train.py", options(TRAIN, vocab="other.model"),
         ("pre.pth was trained with another vocab (size", "other.model (", "pass the --vocab it was trained with")),
    Case("NSMC row with a label other than 0/1", "gpt/train.py", options(TRAIN, train="label_2.json"),
         ("label_2.json:2: label must be 0 or 1, got 2", "data/nsmc.py")),
    Case("NSMC row with a missing column", "gpt/train.py", options(TRAIN, train="no_document.json"),
         ("no_document.json:1: expected id and document strings", "data/nsmc.py")),
    Case("output folder missing (train.py --results)", "gpt/train.py", options(TRAIN, results="no_dir/results.csv"),
         ("output folder does not exist: no_dir", "create it")),
    Case("negative --lm", "gpt/train.py", options(TRAIN, "--lm", "-0.5"),
         ("argument --lm: must be a number >= 0, got -0.5", "train.py --help")),
    Case("the test file as pretraining text", "gpt/data.py", options(DATA, "--extra", "test.json", "--test", "test.json"),
         ("--extra test.json is the test file", "ratings_train.json")),
    Case("pretraining text sharing reviews with the test file", "gpt/data.py",
         options(DATA, "--extra", "test_copy.json", "--test", "test.json"),
         ("test_copy.json holds", "reviews of the test file test.json", "ratings_train.json")),
    Case("NSMC TSV without its header", "data/nsmc.py",
         ("--train", "no_header.txt", "--test", "no_header.txt", "--train_output", "a.json", "--test_output", "b.json"),
         ("no_header.txt:1: missing the NSMC header", "NSMC ratings file")),
    Case("--top_k and --top_p both set", "gpt/generate.py",
         ("대한민국", "--model", "pre.pth", "--vocab", "vocab.model", "--top_k", "5", "--top_p", "0.9"),
         ("--top_k 5 and --top_p 0.9 are exclusive", "--top_k 0")),
    Case("a pretraining checkpoint given to predict.py", "gpt/predict.py",
         ("--model", "pre.pth", "--vocab", "vocab.model", "재밌어요"),
         ("pre.pth is not a fine-tuned gpt classifier", "save_best.pth")),
]


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` -> its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sample_corpus: dict[str, Path], sample_vocab: Path, gpt_store: Path, vocab_build,
           write_config, run_script) -> Path:
    folder = tmp_path_factory.mktemp("bad_input_inputs")
    shutil.copy(sample_vocab, folder / "vocab.model")
    vocab_build.train(sample_corpus["kowiki"], folder / "other", vocab_build.SpmSettings(vocab_size=3000, threads=1),
                      log=lambda *_: None)
    shutil.copytree(gpt_store, folder / "store")
    write_config(folder / "tiny.json")
    write_config(folder / "short.json", n_seq=16)
    for name in ("kowiki", "train", "test"):
        shutil.copy(sample_corpus[name], folder / f"{name}.json")
    shutil.copy(sample_corpus["test"], folder / "test_copy.json")
    (folder / "empty.json").write_text("")
    first = sample_corpus["kowiki"].read_text(encoding="utf-8").splitlines()[0]
    (folder / "not_json.json").write_text(f"{first}\n{{\"id\": \"2\", \"title\": \"cut short\n", encoding="utf-8")
    rows = sample_corpus["train"].read_text(encoding="utf-8").splitlines()
    (folder / "label_2.json").write_text(f"{rows[0]}\n{json.dumps({**json.loads(rows[1]), 'label': 2})}\n",
                                         encoding="utf-8")
    (folder / "no_document.json").write_text('{"id": "1", "label": 1}\n', encoding="utf-8")
    (folder / "no_header.txt").write_text("1\t좋아요\t1\n", encoding="utf-8")
    done = run_script(REPO_ROOT / "gpt/pretrain.py", *options(PRETRAIN, save="pre.pth"), cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    data = (folder / "pre.pth").read_bytes()
    (folder / "damaged.pth").write_bytes(data[: len(data) // 2])
    return folder


@pytest.fixture(scope="module")
def outcomes(inputs: Path, tmp_path_factory, script_env) -> dict[str, tuple[subprocess.CompletedProcess, dict, dict]]:
    """Run every case at once; label -> (process, files before, files after)."""

    base = tmp_path_factory.mktemp("bad_input")

    def run(case: Case) -> tuple[subprocess.CompletedProcess, dict, dict]:
        folder = base / f"case{CASES.index(case)}"
        shutil.copytree(inputs, folder, copy_function=os.link)  # hard links: cheap, and a rewrite shows in the hash
        before = digest(folder)
        done = subprocess.run([sys.executable, str(REPO_ROOT / case.script), *case.args], cwd=folder, env=script_env,
                              capture_output=True, text=True, timeout=120)
        return done, before, digest(folder)

    inputs_before = digest(inputs)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(zip((c.label for c in CASES), pool.map(run, CASES)))
    assert digest(inputs) == inputs_before  # hard links: a file written in place would show here too
    return results


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case: Case, outcomes) -> None:
    done, before, after = outcomes[case.label]
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in case.expect:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert after == before  # nothing changed, nothing added


def test_readme_table_lists_every_case() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Bad input\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert section, "README.md has no '## Bad input' section"
    rows = {line.split("|")[1].strip() for line in section.group(1).splitlines() if line.startswith("| ")}
    assert {c.label for c in CASES} <= rows, sorted({c.label for c in CASES} - rows)


HELP_SCRIPTS = [("gpt", "data.py"), ("gpt", "pretrain.py"), ("gpt", "train.py"), ("gpt", "predict.py"),
                ("gpt", "generate.py"), ("gpt", "export.py"), ("gpt", "experiment.py"), ("spanbert", "train.py"),
                ("data", "download.py"), ("data", "kowiki.py"), ("data", "nsmc.py"), ("vocab", "build.py"),
                ("bert", "pretrain.py"), ("bert", "train.py"), ("spanbert", "pretrain.py"),
                (".", "-m common.baseline"), ("gpt", "diagnose.py")]


def test_help_shows_every_default_once(script_env) -> None:
    """Each option of every script's --help says its default at most once (not "(default: None) (default: None)")."""
    def help_text(folder: str, script: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *script.split(), "--help"], cwd=REPO_ROOT / folder, env=script_env,
                              capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:  # each mostly waits on imports
        helps = list(pool.map(lambda fs: help_text(*fs), HELP_SCRIPTS))
    for (folder, script), done in zip(HELP_SCRIPTS, helps):
        assert done.returncode == 0, f"{folder}/{script}: {done.stderr[-2000:]}"
        entries = re.split(r"\n(?=  -)", done.stdout.split("options:", 1)[1])  # one entry per option
        assert len(entries) > 1, f"{folder}/{script}"
        for entry in entries:
            assert entry.count("(default:") <= 1, f"{folder}/{script}: {entry}"
