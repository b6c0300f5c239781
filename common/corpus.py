"""Readers for the two corpora: Korean Wikipedia (kowiki) and NSMC.

kowiki comes as `wikiextractor` output: files `wiki_00`, `wiki_01.bz2`, ... in
folders `AA/`, `AB/`, ..., each holding records

    <doc id="5" url="https://ko.wikipedia.org/wiki?curid=5" title="지미 카터">
    지미 카터                      <- the title again (dropped)
                                   <- blank line
    first paragraph
    second paragraph               <- paragraphs: one per non-empty line
    </doc>

`data/kowiki.py` turns it into `data/kowiki.json`: one JSON article per line,
`{"id": str, "title": str, "text": [paragraph, ...]}`.

NSMC comes as the published TSV (`id<TAB>document<TAB>label`, quoting off);
`data/nsmc.py` turns it into JSON lines `{"id": str, "document": str, "label": int}`.

Every reader raises `common.cli.UserError` (one line, naming the file and the
fix) for a missing or malformed file, never a traceback.
"""
from __future__ import annotations

import bz2
import collections
import html
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from common.cli import UserError
from common.paths import DATA_DIR, SAMPLE_DIR, rel

# --- kowiki: wikiextractor output -------------------------------------------

# `wiki_00`, `wiki_17.bz2`: the files wikiextractor writes (with or without --compress).
WIKI_FILE_RE = re.compile(r"^wiki_\d+(\.bz2)?$")
# The title may itself hold a quote when the extractor did not escape it, so
# it runs greedily up to the final `">`.
DOC_HEADER_RE = re.compile(r'^<doc id="(?P<id>[^"]*)" url="(?P<url>[^"]*)" title="(?P<title>.*)">$')
DOC_FOOTER = "</doc>"

# A redirect page whose markup survived extraction: "#넘겨주기 [[서울]]",
# "#REDIRECT 서울", "넘겨주기 서울" (wikiextractor strips the brackets and
# sometimes the '#'). The lookahead keeps "넘겨주기는 ..." (prose) out.
REDIRECT_RE = re.compile(r"^#?\s*(redirect|넘겨주기)(?=[\s:\[]|$)", re.IGNORECASE)

# The fixes name paths relative to the directory the user runs from.
KOWIKI_FIX = f"run python {rel(DATA_DIR / 'download.py')} --only kowiki, or pass --input {rel(SAMPLE_DIR / 'kowiki')}"


def wikiextractor_files(root: str | os.PathLike) -> list[Path]:
    """The `wiki_NN` / `wiki_NN.bz2` files under `root`, in reading order.

    `root` is a folder (searched recursively) or one such file.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UserError(f"kowiki text not found: {root} ({KOWIKI_FIX})")
    files = sorted(
        (p for p in root.rglob("wiki_*") if p.is_file() and WIKI_FILE_RE.match(p.name)),
        key=lambda p: p.relative_to(root).parts,
    )
    if not files:
        raise UserError(f"no wikiextractor files (wiki_NN or wiki_NN.bz2) under {root} ({KOWIKI_FIX})")
    return files


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its newline) from a plain or bzip2 file.

    Decompression and decoding errors become a UserError naming the file, so a
    truncated download is reported as such rather than as a traceback.
    """
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    binary = bz2.BZ2File(raw) if path.name.endswith(".bz2") else raw
    try:
        with raw, binary, io.TextIOWrapper(binary, encoding="utf-8") as text:
            for number, line in enumerate(text, start=1):
                yield number, line.rstrip("\r\n")
    except (EOFError, OSError) as e:
        # bz2 raises EOFError for a truncated stream, OSError for a corrupt one.
        raise UserError(f"{path}: corrupt or truncated file ({e}); download or extract it again") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason}); is this wikiextractor output?") from None


def _iter_file_articles(path: Path) -> Iterator[dict]:
    header: re.Match | None = None
    header_line = 0
    body: list[str] = []
    for number, line in _numbered_lines(path):
        if header is None:
            if not line.strip():
                continue
            header = DOC_HEADER_RE.match(line)
            if header is None:
                raise UserError(f"{path}:{number}: expected a <doc id=... url=... title=...> line, got {line[:60]!r}")
            header_line, body = number, []
        elif line.rstrip() == DOC_FOOTER:
            yield _make_article(header, body)
            header = None
        elif line.startswith("<doc "):
            raise UserError(f"{path}:{number}: new <doc> before the </doc> of the record at line {header_line}")
        else:
            body.append(line)
    if header is not None:
        raise UserError(f"{path}:{header_line}: record has no </doc> (file cut short?); extract it again")


def _make_article(header: re.Match, body: list[str]) -> dict:
    # wikiextractor HTML-escapes the title ("KT&amp;G"), in the attribute and
    # on the title line, but not the text.
    title = html.unescape(header["title"])
    if body and html.unescape(body[0].strip()) == title:
        body = body[1:]
    # Paragraphs are separated by blank lines in some wikiextractor versions
    # and by a single newline in others (3.x), and every line is a whole
    # paragraph or heading in both; so each non-empty line is a paragraph.
    paragraphs = [line.strip() for line in body if line.strip()]
    return {"id": header["id"], "title": title, "text": paragraphs}


def iter_wikiextractor(root: str | os.PathLike) -> Iterator[dict]:
    """Stream the articles of wikiextractor output, one file at a time.

    `root`: a folder tree of `wiki_NN` / `wiki_NN.bz2` files (read in sorted
    order) or one such file. Yields `{"id", "title", "text": [paragraph, ...]}`;
    empty articles and redirects are yielded too (see `skip_reason`).
    Memory holds one article at a time.
    """
    for path in wikiextractor_files(root):
        yield from _iter_file_articles(path)


def is_empty_article(article: dict) -> bool:
    """True when the article has no text besides its title."""
    return not any(paragraph.strip() for paragraph in article["text"])


def is_redirect_article(article: dict) -> bool:
    """True for a redirect page ("#넘겨주기 [[X]]" / "#REDIRECT X") left in the text."""
    text = article["text"]
    # A redirect is one line (plus, at most, a category line).
    return 0 < len(text) <= 2 and bool(REDIRECT_RE.match(text[0]))


def skip_reason(article: dict) -> str | None:
    """Why an article should not go into the corpus: "empty", "redirect", or None to keep it."""
    if is_empty_article(article):
        return "empty"
    if is_redirect_article(article):
        return "redirect"
    return None


# --- kowiki: data/kowiki.json ----------------------------------------------

KOWIKI_JSON_FIX = f"run python {rel(DATA_DIR / 'kowiki.py')}"


def _iter_json_lines(path: Path, fix: str) -> Iterator[tuple[int, dict]]:
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


def iter_kowiki_json(path: str | os.PathLike) -> Iterator[dict]:
    """Stream the articles of `data/kowiki.json` (one JSON article per line).

    Yields `{"id": str, "title": str, "text": [paragraph, ...]}`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"kowiki JSON not found: {path} ({KOWIKI_JSON_FIX} first)")
    for number, article in _iter_json_lines(path, KOWIKI_JSON_FIX):
        text = article.get("text")
        if not (
            isinstance(article.get("id"), str)
            and isinstance(article.get("title"), str)
            and isinstance(text, list)
            and all(isinstance(paragraph, str) for paragraph in text)
        ):
            raise UserError(
                f"{path}:{number}: expected an article with id, title (strings) and text (a list of strings); "
                f"{KOWIKI_JSON_FIX} again"
            )
        yield article


# --- NSMC --------------------------------------------------------------------

NSMC_HEADER = ["id", "document", "label"]
NSMC_TSV_FIX = (
    f"run python {rel(DATA_DIR / 'download.py')} --only nsmc, or use the sample in {rel(SAMPLE_DIR / 'nsmc')}"
)
NSMC_JSON_FIX = f"run python {rel(DATA_DIR / 'nsmc.py')}"

# Reasons a TSV row is skipped, as counted by read_nsmc_tsv.
SKIP_EMPTY = "empty document"
SKIP_BAD_LABEL = "bad label"
SKIP_COLUMNS = "wrong column count"


def read_nsmc_tsv(path: str | os.PathLike) -> tuple[list[dict], collections.Counter]:
    """Read an NSMC TSV file as published (`ratings_train.txt`, `ratings_test.txt`).

    Tab separated with the header `id<TAB>document<TAB>label`; quoting is off
    (csv.QUOTE_NONE): a quote is a literal character of the review, and the
    doubled quotes some reviews hold stay doubled. Returns the rows `{"id": str,
    "document": str, "label": 0 or 1}` and a Counter of skipped rows by reason
    ("empty document", "bad label", "wrong column count").
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"NSMC file not found: {path} ({NSMC_TSV_FIX})")
    rows: list[dict] = []
    skipped: collections.Counter = collections.Counter()
    try:
        # newline="" keeps a stray \r inside a review instead of splitting on it.
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = f.readline().rstrip("\r\n").split("\t")
            if header != NSMC_HEADER:
                raise UserError(
                    f"{path}:1: missing the NSMC header 'id<TAB>document<TAB>label' "
                    f"(got {'<TAB>'.join(header)[:60]!r}); is this an NSMC ratings file?"
                )
            for line in f:
                fields = line.rstrip("\r\n").split("\t")
                if len(fields) != 3:
                    if line.strip():  # a blank line (e.g. at the end) is not a row
                        skipped[SKIP_COLUMNS] += 1
                    continue
                review_id, document, label = fields
                if label not in ("0", "1"):
                    skipped[SKIP_BAD_LABEL] += 1
                elif not document.strip():
                    skipped[SKIP_EMPTY] += 1
                else:
                    rows.append({"id": review_id, "document": document, "label": int(label)})
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason}); {NSMC_TSV_FIX}") from None
    return rows, skipped


NSMC_DEV_SIZE = 5000  # dev reviews of the full train file: the same for every run, model and label count


def nsmc_split(n: int, dev_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train pool, dev) indices of an NSMC train file of n reviews, both sorted.

    The dev set is a fixed random `dev_size` reviews (default: NSMC_DEV_SIZE, or
    5% of a smaller file), drawn with seed 0 from the whole file: one dev set for
    every run whatever its number of labelled reviews, so that epochs are picked
    on a dev set of the same size for every arm. Labelled subsets
    (`labelled_subset`) and the review text added to pretraining
    (`common.prep.pretraining_reviews`) come from the pool only.
    """
    if dev_size is None:
        dev_size = min(NSMC_DEV_SIZE, int(round(n * 0.05)))
    if not 0 < dev_size < n / 2:
        raise UserError(f"--dev_size {dev_size} does not fit a train file of {n} reviews "
                        f"(choose 1 to {max(1, (n - 1) // 2)})")
    order = np.random.default_rng(0).permutation(n)
    return np.sort(order[dev_size:]), np.sort(order[:dev_size])


def labelled_subset(pool: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` reviews of the pool, drawn with `seed` (sorted); the whole pool when size is 0 or larger.

    A seed picks both the subset and (in train.py) the initialization: the spread
    over seeds at a small label count includes which reviews were labelled."""
    if not size or size >= len(pool):
        return pool
    return np.sort(np.random.default_rng([seed, size]).choice(pool, size, replace=False))


def read_nsmc_json(path: str | os.PathLike) -> list[dict]:
    """Read the JSON-lines file `data/nsmc.py` writes: `{"id", "document", "label"}` per line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"NSMC JSON not found: {path} ({NSMC_JSON_FIX} first)")
    rows = []
    for number, row in _iter_json_lines(path, NSMC_JSON_FIX):
        if not (isinstance(row.get("id"), str) and isinstance(row.get("document"), str)):
            raise UserError(f"{path}:{number}: expected id and document strings; {NSMC_JSON_FIX} again")
        label = row.get("label")
        # `type(...) is int` rejects true/false and 1.0 too.
        if type(label) is not int or label not in (0, 1):
            raise UserError(f"{path}:{number}: label must be 0 or 1, got {label!r}; {NSMC_JSON_FIX} again")
        rows.append({"id": row["id"], "document": row["document"], "label": label})
    return rows
