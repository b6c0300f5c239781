"""Build data/kowiki.json (one JSON article per line) from Korean Wikipedia.

The input is either wikiextractor output (a folder of wiki_NN[.bz2] files, or
one such file) or a raw `kowiki-...-pages-articles.xml.bz2` dump, which is
first run through the `wikiextractor` package (pip install -r
requirements-extra.txt) into a temporary folder beside the output.

Empty articles and redirects are skipped and counted. Memory stays flat: the
articles are streamed one at a time into the output, which is written to a
temporary file and renamed into place only when complete.

    python data/kowiki.py                                  # $CORPUS_DIR/kowiki or the downloaded dump
    python data/kowiki.py --input data/sample/kowiki       # the small sample shipped with the project
"""
from __future__ import annotations

import collections
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tqdm import tqdm

from common.cli import (DATA_DIR, DOWNLOAD_DIR, KOWIKI_JSON, SAMPLE_DIR, UserError, corpus_dir, make_parser, rel,
                        require_output_dir, run_main)
from common.corpus import iter_wikiextractor, skip_reason, wikiextractor_files
from common.io import atomic_open

KOWIKI_DUMP_NAME = "kowiki-latest-pages-articles.xml.bz2"
# Paths in messages are relative to where the user runs the script from.
INPUT_FIX = (
    f"run python {rel(DATA_DIR / 'download.py')} --only kowiki, or pass --input {rel(SAMPLE_DIR / 'kowiki')}"
)


def default_input() -> Path:
    """$CORPUS_DIR/kowiki when CORPUS_DIR is set, else the dump data/download.py fetches."""
    corpora = corpus_dir()
    return corpora / "kowiki" if corpora else DOWNLOAD_DIR / KOWIKI_DUMP_NAME


def is_raw_dump(path: Path) -> bool:
    return path.is_file() and (path.name.endswith(".xml.bz2") or path.name.endswith(".xml"))


def run_wikiextractor(dump: Path, out_dir: Path) -> None:
    """Extract the plain text of a raw dump into out_dir with the wikiextractor package."""
    if importlib.util.find_spec("wikiextractor") is None:
        raise UserError(
            f"{dump} is a raw dump, and reading one needs the wikiextractor package "
            "(pip install -r requirements-extra.txt), or pass wikiextractor output with --input"
        )
    command = [
        sys.executable, "-m", "wikiextractor.WikiExtractor", str(dump),
        "--output", str(out_dir),
        # wikiextractor's --html-safe takes a string, so "false" still means
        # true: an empty string is the only way to keep "&" as "&" in the text.
        "--html-safe", "",
        "--processes", str(max(1, (os.cpu_count() or 2) - 1)),
    ]
    print(f"extracting {rel(dump)} with wikiextractor (this takes a while for the full dump)", file=sys.stderr)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace")
    # Relay wikiextractor's progress lines as they come; keep the rest (a
    # traceback on failure) to report its last line as a one-line error.
    last_lines: collections.deque[str] = collections.deque(maxlen=20)

    def relay() -> None:
        for line in process.stderr:
            line = line.rstrip()
            if line.startswith("INFO:"):
                print(f"  wikiextractor {line}", file=sys.stderr)
            elif line:
                last_lines.append(line)

    relay_thread = threading.Thread(target=relay, daemon=True)
    relay_thread.start()
    returncode = process.wait()
    relay_thread.join()
    if returncode != 0:
        reason = last_lines[-1] if last_lines else f"exit code {returncode}"
        raise UserError(f"wikiextractor failed on {dump}: {reason} (is the dump complete? download it again)")


def write_articles(text_root: Path, output: Path) -> collections.Counter:
    """Stream the articles under text_root into output; return counts: written, empty, redirect."""
    counts: collections.Counter = collections.Counter()
    files = wikiextractor_files(text_root)
    with atomic_open(output) as out:
        # A bar over the files (not the articles) so that it has a total and an ETA;
        # disable=None: no bar when stderr is not a terminal (logs, tests).
        progress = tqdm(files, unit=" file", desc="kowiki", disable=None)
        for path in progress:
            for article in iter_wikiextractor(path):
                reason = skip_reason(article)
                if reason:
                    counts[reason] += 1
                    continue
                out.write(json.dumps(article, ensure_ascii=False) + "\n")
                counts["written"] += 1
            progress.set_postfix(articles=counts["written"], refresh=False)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", type=Path, default=rel(default_input()),
        help="wikiextractor output (a folder of wiki_NN[.bz2] files, or one file) or a raw *.xml.bz2 dump; "
        "the default is $CORPUS_DIR/kowiki when CORPUS_DIR is set, else the dump data/download.py fetches",
    )
    parser.add_argument("--output", type=Path, default=rel(KOWIKI_JSON), help="JSON-lines file to write")
    args = parser.parse_args(argv)

    source: Path = args.input
    if not source.exists():
        raise UserError(f"kowiki input not found: {source} ({INPUT_FIX})")
    output = require_output_dir(args.output)

    if is_raw_dump(source):
        # Beside the output rather than in /tmp: the full dump's text is ~700 MB.
        with tempfile.TemporaryDirectory(prefix=".kowiki-extract-", dir=output.parent) as extracted:
            run_wikiextractor(source, Path(extracted))
            counts = write_articles(Path(extracted), output)
    else:
        counts = write_articles(source, output)

    print(
        f"wrote {counts['written']:,} articles to {rel(output)} "
        f"(skipped: {counts['empty']:,} empty, {counts['redirect']:,} redirect)"
    )


if __name__ == "__main__":
    run_main(main)
