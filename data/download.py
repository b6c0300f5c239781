"""Download NSMC (ratings_train.txt, ratings_test.txt) and the kowiki dump into data/download.

Each file is fetched into NAME.part and renamed to NAME only once complete, so
a NAME that exists is complete and is skipped. An interrupted download resumes
from its .part file with an HTTP Range request (from zero when the server
ignores Range). Then build the JSON files with data/nsmc.py and data/kowiki.py.

    python data/download.py                 # everything (the kowiki dump is about 1 GB)
    python data/download.py --only nsmc     # the two NSMC files (about 20 MB)
"""
from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from common.cli import DOWNLOAD_DIR, UserError, make_parser, positive_int, rel, run_main

NSMC_BASE_URL = "https://raw.githubusercontent.com/e9t/nsmc/master/"
KOWIKI_BASE_URL = "https://dumps.wikimedia.org/kowiki/latest/"
# name -> the folder URL it is fetched from by default
FILES = {
    "nsmc": {"ratings_train.txt": NSMC_BASE_URL, "ratings_test.txt": NSMC_BASE_URL},
    "kowiki": {"kowiki-latest-pages-articles.xml.bz2": KOWIKI_BASE_URL},
}
CHUNK_SIZE = 1 << 20
USER_AGENT = "kolm-data-download/0.1 (urllib)"
CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

# What a refused, dropped or stalled connection raises while we read from it.
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError)


def network_error(url: str, error: BaseException) -> UserError:
    reason = getattr(error, "reason", None) or error
    text = str(reason) or type(error).__name__
    return UserError(f"could not download {url}: {text} (check the network and run again; it resumes)")


class RangeNotSatisfiable(Exception):
    """HTTP 416: the server has nothing past the requested offset."""

    def __init__(self, total: int | None):
        self.total = total


def open_url(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """GET url, from byte `offset` on when offset > 0."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            match = re.fullmatch(r"bytes \*/(\d+)", e.headers.get("Content-Range", ""))
            raise RangeNotSatisfiable(int(match[1]) if match else None) from None
        raise UserError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
    except NETWORK_ERRORS as e:
        raise network_error(url, e) from None


def copy_body(url: str, response: http.client.HTTPResponse, part: Path, offset: int, total: int | None) -> None:
    """Append the response body to `part` (truncated to `offset` bytes first), with a progress bar."""
    with open(part, "r+b" if part.exists() else "wb") as out, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=part.name.removesuffix(".part"), disable=None,  # no bar when stderr is not a terminal
    ) as progress:
        out.truncate(offset)
        out.seek(offset)
        while True:
            try:
                chunk = response.read(CHUNK_SIZE)
            except NETWORK_ERRORS as e:
                raise network_error(url, e) from None
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as e:
                raise UserError(f"cannot write {part}: {e.strerror}") from None
            progress.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())


def download(url: str, target: Path, timeout: float = 60.0) -> str:
    """Fetch url into target via target.part; return "skipped", "downloaded" or "resumed"."""
    if target.exists():
        return "skipped"
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0

    try:
        response = open_url(url, offset, timeout)
    except RangeNotSatisfiable as e:
        if e.total == offset:
            # The .part was complete but not yet renamed (stopped in between).
            os.replace(part, target)
            return "resumed"
        # The .part is longer than the file: it changed on the server, start over.
        part.unlink()
        offset = 0
        response = open_url(url, 0, timeout)

    with response:
        total = None
        if response.status == 206:
            match = CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if not match or int(match[1]) != offset:
                # Not the range we asked for: safer to start over than to splice.
                response.close()
                part.unlink(missing_ok=True)
                return download(url, target, timeout)
            total = int(match[3]) if match[3] != "*" else None
        else:
            # 200: a server that ignores Range sends the whole file, so the
            # .part is rewritten from byte zero.
            offset = 0
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
        copy_body(url, response, part, offset, total)

    size = part.stat().st_size
    if total is not None and size != total:
        # A connection closed early: keep the .part for the next run to resume.
        raise UserError(
            f"download of {url} stopped at {size:,} of {total:,} bytes (run again to resume from {rel(part)})"
        )
    # The rename is the commit point: NAME exists only once it is complete.
    os.replace(part, target)
    return "resumed" if offset else "downloaded"


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=rel(DOWNLOAD_DIR),
                        help="folder to download into (created if missing)")
    parser.add_argument("--only", choices=["nsmc", "kowiki", "all"], default="all", help="which corpus to fetch")
    parser.add_argument("--base-url", default=None,
                        help="fetch every file from this folder URL instead (a mirror, or a local test server); "
                        f"by default NSMC comes from {NSMC_BASE_URL} and kowiki from {KOWIKI_BASE_URL}")
    parser.add_argument("--timeout", type=positive_int, default=60, help="seconds to wait on the network")
    args = parser.parse_args(argv)

    groups = ["nsmc", "kowiki"] if args.only == "all" else [args.only]
    try:
        args.dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the download folder {args.dest}: {e.strerror}") from None
    for group in groups:
        for name, base_url in FILES[group].items():
            base = args.base_url or base_url
            url = base.rstrip("/") + "/" + name
            status = download(url, args.dest / name, timeout=args.timeout)
            note = " (already complete)" if status == "skipped" else ""
            print(f"{status} {rel(args.dest / name)}{note}")


if __name__ == "__main__":
    run_main(main)
