"""What the benchmark reads: the vocab, NSMC reviews, a fixed slice of kowiki, and token stores.

Full run: vocab/kowiki.model, data/ratings_train.json (else $CORPUS_DIR/nsmc),
and the first --slice_mb of data/kowiki.json (else of $CORPUS_DIR/kowiki, read as
data/kowiki.py reads it), plus a 4x slice for the loader's memory.
Quick run (--quick): everything from the shipped sample (data/sample), with a
vocab built from it in the work folder, as tests/conftest.py and quickstart.py do;
the 4x slice is the sample repeated four times.

Token stores are written by the model folders' data.py, run as subprocesses
(`StoreBuilder`): the same runs give case 3's throughput and peak RSS and case
2's pretraining batches.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.cli import DEFAULT_VOCAB, KOWIKI_JSON, NSMC_TRAIN_JSON, REPO_ROOT, SAMPLE_DIR, UserError, corpus_dir, rel
from common.corpus import iter_wikiextractor, skip_reason
from common.nsmc import read_nsmc_json, read_nsmc_tsv
from common.vocab import Vocab, load_vocab

MODELS = ("gpt", "bert", "spanbert")
SCALES = (1, 4)  # corpus sizes of the loader-memory check, in slices


@dataclass
class Inputs:
    vocab_path: Path
    vocab: Vocab
    reviews: list[dict]  # NSMC train rows {"id", "document", "label"}
    reviews_source: str
    kowiki: dict[int, Path]  # scale -> kowiki.json slice
    kowiki_source: str


def _write_articles(articles: object, out: Path, max_bytes: int | None) -> int:
    """Write kowiki.json lines (as data/kowiki.py does) until max_bytes; returns the bytes written."""
    written = 0
    with open(out, "w", encoding="utf-8") as f:
        for article in articles:
            line = json.dumps(article, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            if max_bytes is not None and written >= max_bytes:
                break
    return written


def _head_lines(src: Path, out: Path, max_bytes: int) -> int:
    """The first whole lines of `src` until at least max_bytes."""
    written = 0
    with open(src, "rb") as f, open(out, "wb") as g:
        for line in f:
            g.write(line)
            written += len(line)
            if written >= max_bytes:
                break
    return written


def kowiki_slices(workdir: Path, slice_mb: float, quick: bool) -> tuple[dict[int, Path], str]:
    """{scale: kowiki.json slice} and where the text came from."""
    paths = {s: workdir / f"kowiki_{s}x.json" for s in SCALES}
    if quick:
        articles = [a for a in iter_wikiextractor(SAMPLE_DIR / "kowiki") if skip_reason(a) is None]
        for s, p in paths.items():
            _write_articles(articles * s, p, None)
        return paths, f"{rel(SAMPLE_DIR / 'kowiki')} (the shipped sample; 4x = repeated four times)"
    n = int(slice_mb * 2**20)
    if KOWIKI_JSON.is_file():
        sizes = {s: _head_lines(KOWIKI_JSON, p, s * n) for s, p in paths.items()}
        source = rel(KOWIKI_JSON)
    elif corpus_dir() is not None and (corpus_dir() / "kowiki").exists():
        root = corpus_dir() / "kowiki"
        sizes = {s: _write_articles((a for a in iter_wikiextractor(root) if skip_reason(a) is None), p, s * n)
                 for s, p in paths.items()}
        source = f"{root} (read as data/kowiki.py reads it)"
    else:
        raise UserError(f"no kowiki text: {rel(KOWIKI_JSON)} is missing and $CORPUS_DIR/kowiki is not set "
                        f"(build it with python data/kowiki.py, or run the benchmark with --quick)")
    if sizes[SCALES[-1]] < SCALES[-1] * n:
        raise UserError(f"the kowiki text holds {sizes[SCALES[-1]] / 2**20:.1f} MB, less than {SCALES[-1]} x "
                        f"--slice_mb {slice_mb:g}: pass a smaller --slice_mb")
    return paths, f"the first {slice_mb:g} MB (and {SCALES[-1] * slice_mb:g} MB) of {source}"


def nsmc_reviews(quick: bool) -> tuple[list[dict], str]:
    if quick:
        path = SAMPLE_DIR / "nsmc" / "ratings_train.txt"
        return read_nsmc_tsv(path)[0], rel(path)
    if NSMC_TRAIN_JSON.is_file():
        return read_nsmc_json(NSMC_TRAIN_JSON), rel(NSMC_TRAIN_JSON)
    if corpus_dir() is not None and (corpus_dir() / "nsmc" / "ratings_train.txt").is_file():
        path = corpus_dir() / "nsmc" / "ratings_train.txt"
        return read_nsmc_tsv(path)[0], str(path)
    raise UserError(f"no NSMC reviews: {rel(NSMC_TRAIN_JSON)} is missing and $CORPUS_DIR/nsmc is not set "
                    f"(build it with python data/nsmc.py, or run the benchmark with --quick)")


def sample_vocab(workdir: Path, kowiki_json: Path) -> Path:
    """A vocab of the sample corpus, built with vocab/build.py (a script: loaded by path)."""
    spec = importlib.util.spec_from_file_location("kolm_vocab_build", REPO_ROOT / "vocab" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.train(kowiki_json, workdir / "sample_vocab", build.SpmSettings(threads=1), log=lambda *_: None)


def prepare(workdir: Path, quick: bool, slice_mb: float) -> Inputs:
    kowiki, kowiki_source = kowiki_slices(workdir, slice_mb, quick)
    vocab_path = sample_vocab(workdir, kowiki[1]) if quick else DEFAULT_VOCAB
    reviews, reviews_source = nsmc_reviews(quick)
    return Inputs(vocab_path, load_vocab(vocab_path), reviews, reviews_source, kowiki, kowiki_source)


# --- subprocesses with their peak RSS ----------------------------------------------------

def script_env() -> dict[str, str]:
    """This checkout first on the path (the scripts import common/ and their model folder)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_measured(cmd: list[str], cwd: Path, log_path: Path) -> tuple[float, int, str]:
    """Run `cmd` in `cwd` (through bench/wait4.py); -> (wall seconds, peak RSS in bytes, its output).

    The peak RSS is the largest resident set of the process and of the children it
    waited for (data.py's tokenizer workers), each taken alone.
    """
    result = log_path.with_suffix(".json")
    wrapped = [sys.executable, str(REPO_ROOT / "bench" / "wait4.py"), str(result), "--", *cmd]
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.run(wrapped, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=script_env()).returncode
    output = log_path.read_text(encoding="utf-8", errors="replace")
    if code != 0:
        tail = "\n".join(output.splitlines()[-5:])
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {code}):\n{tail}")
    measured = json.loads(result.read_text(encoding="utf-8"))
    return measured["seconds"], measured["peak_rss"], output


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


@dataclass
class StoreRun:
    """One data.py run: its input, output, time and memory."""

    model: str
    scale: int
    store: Path
    input_bytes: int
    store_bytes: int
    seconds: float
    peak_rss: int


class StoreBuilder:
    """Builds each (model, scale) token store once, with the model's data.py, and remembers the run."""

    def __init__(self, inputs: Inputs, workdir: Path, n_seq: int, workers: int, log: Callable[[str], None] = print):
        self.inputs, self.workdir, self.n_seq, self.workers, self.log = inputs, workdir, n_seq, workers, log
        self.runs: dict[tuple[str, int], StoreRun] = {}

    def command(self, model: str, scale: int) -> list[str]:
        return [sys.executable, "data.py", "--input", str(self.inputs.kowiki[scale]),
                "--output", str(self.workdir / f"store_{model}_{scale}x"), "--n_seq", str(self.n_seq),
                "--vocab", str(self.inputs.vocab_path), "--workers", str(self.workers), "--force"]

    def build(self, model: str, scale: int = 1) -> StoreRun:
        if (model, scale) not in self.runs:
            cmd = self.command(model, scale)
            seconds, rss, _ = run_measured(cmd, REPO_ROOT / model, self.workdir / f"data_{model}_{scale}x.log")
            store = Path(cmd[cmd.index("--output") + 1])
            run = StoreRun(model, scale, store, self.inputs.kowiki[scale].stat().st_size, folder_bytes(store),
                           seconds, rss)
            self.runs[(model, scale)] = run
            self.log(f"    {model}/data.py on the {scale}x slice: {run.input_bytes / 2**20:.1f} MB in {seconds:.1f}s, "
                     f"peak RSS {rss / 2**20:.0f} MB")
        return self.runs[(model, scale)]
