"""Build data/ratings_train.json and data/ratings_test.json from NSMC's TSV files.

Reads the Naver Sentiment Movie Corpus as published (ratings_train.txt,
ratings_test.txt: `id<TAB>document<TAB>label`, quoting off), drops rows with an
empty review, a label other than 0/1 or a wrong column count (counted and
reported), and writes JSON lines `{"id": str, "document": str, "label": 0|1}`.
Both inputs are read before either output is written, and each output is
renamed into place only when complete.

    python data/nsmc.py                  # $CORPUS_DIR/nsmc or data/download (see data/download.py)
    python data/nsmc.py --train data/sample/nsmc/ratings_train.txt --test data/sample/nsmc/ratings_test.txt
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

from common.cli import (DATA_DIR, DOWNLOAD_DIR, NSMC_TEST_JSON, NSMC_TRAIN_JSON, SAMPLE_DIR, UserError, corpus_dir,
                        make_parser, rel, require_output_dir, run_main)
from common.io import atomic_open
from common.nsmc import read_nsmc_tsv

# Paths in messages are relative to where the user runs the script from.
INPUT_FIX = (
    f"run python {rel(DATA_DIR / 'download.py')} --only nsmc, or pass "
    f"--train {rel(SAMPLE_DIR / 'nsmc' / 'ratings_train.txt')} --test {rel(SAMPLE_DIR / 'nsmc' / 'ratings_test.txt')}"
)


def default_tsv(name: str) -> Path:
    """$CORPUS_DIR/nsmc/NAME when CORPUS_DIR is set, else data/download/NAME."""
    corpora = corpus_dir()
    return corpora / "nsmc" / name if corpora else DOWNLOAD_DIR / name


def read_split(split: str, path: Path) -> tuple[list[dict], collections.Counter]:
    if not path.is_file():
        raise UserError(f"NSMC {split} file not found: {path} ({INPUT_FIX})")
    return read_nsmc_tsv(path)


def write_rows(rows: list[dict], output: Path) -> None:
    with atomic_open(output) as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def describe(split: str, rows: list[dict], skipped: collections.Counter, output: Path) -> str:
    labels = collections.Counter(row["label"] for row in rows)
    skip_text = ", ".join(f"{n:,} {reason}" for reason, n in sorted(skipped.items())) or "none"
    return (
        f"{split}: kept {len(rows):,} rows ({labels[0]:,} negative, {labels[1]:,} positive), "
        f"skipped: {skip_text} -> {rel(output)}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=rel(default_tsv("ratings_train.txt")),
                        help="NSMC training TSV (default: $CORPUS_DIR/nsmc/... when CORPUS_DIR is set)")
    parser.add_argument("--test", type=Path, default=rel(default_tsv("ratings_test.txt")),
                        help="NSMC test TSV (default: $CORPUS_DIR/nsmc/... when CORPUS_DIR is set)")
    parser.add_argument("--train_output", type=Path, default=rel(NSMC_TRAIN_JSON), help="JSON-lines file to write")
    parser.add_argument("--test_output", type=Path, default=rel(NSMC_TEST_JSON), help="JSON-lines file to write")
    args = parser.parse_args(argv)

    train_output = require_output_dir(args.train_output)
    test_output = require_output_dir(args.test_output)
    # Read (and so validate) both inputs before writing anything.
    train_rows, train_skipped = read_split("train", args.train)
    test_rows, test_skipped = read_split("test", args.test)
    if not train_rows or not test_rows:
        empty = args.train if not train_rows else args.test
        raise UserError(f"no usable rows in {empty} (is it an NSMC ratings file?)")

    write_rows(train_rows, train_output)
    write_rows(test_rows, test_output)
    print(describe("train", train_rows, train_skipped, train_output))
    print(describe("test", test_rows, test_skipped, test_output))


if __name__ == "__main__":
    run_main(main)
