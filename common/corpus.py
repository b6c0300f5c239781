"""Readers of Korean Wikipedia (kowiki); NSMC's are in common/nsmc.py.

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

Every reader raises `common.cli.UserError` (one line, naming the file and the
fix) for a missing or malformed file, never a traceback.
"""
from __future__ import annotations

import bz2
import html
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

from common.cli import DATA_DIR, SAMPLE_DIR, UserError, rel
from common.io import iter_json_lines

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


def iter_kowiki_json(path: str | os.PathLike) -> Iterator[dict]:
    """Stream the articles of `data/kowiki.json` (one JSON article per line).

    Yields `{"id": str, "title": str, "text": [paragraph, ...]}`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"kowiki JSON not found: {path} ({KOWIKI_JSON_FIX} first)")
    for number, article in iter_json_lines(path, KOWIKI_JSON_FIX):
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
