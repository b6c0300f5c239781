"""What every data.py shares: options, and tokenizing kowiki.json on all cores.

Articles stream through a process pool in chunks, so memory stays flat and
both cores (or all of them) tokenize; results come back in corpus order, so
the output is the same whatever the number of workers.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from multiprocessing.pool import Pool
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from common.cli import KOWIKI_JSON, NSMC_TEST_JSON, UserError, add_vocab_option, make_parser, positive_int, rel
from common.nsmc import nsmc_split, read_nsmc_json
from common.vocab import CLS_ID, SEP_ID, Vocab, load_vocab

T = TypeVar("T")
R = TypeVar("R")

_worker_vocab: Vocab | None = None


def data_parser(description: str, default_output: Path, n_seq: int) -> argparse.ArgumentParser:
    parser = make_parser(description)
    parser.add_argument("--input", default=rel(KOWIKI_JSON),
                        help="kowiki.json from data/kowiki.py, or none (the --extra reviews alone)")
    parser.add_argument("--output", default=rel(default_output), help="token store folder to write")
    parser.add_argument("--n_seq", type=positive_int, default=n_seq, help="tokens per training instance")
    add_vocab_option(parser)
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="tokenizer processes")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    return parser


def load_store_vocab(vocab_path: str | os.PathLike) -> Vocab:
    """The vocab of a token store: the stores keep ids as uint16, so it must hold at most 65,535 pieces."""
    vocab = load_vocab(vocab_path)
    if len(vocab) > np.iinfo(np.uint16).max:
        raise UserError(f"{vocab_path} has {len(vocab)} pieces: more than uint16 holds (use a vocab under 65,536)")
    return vocab


def add_review_text_args(parser: argparse.ArgumentParser) -> None:
    """--input none and --extra: the NSMC train split's review text in the pretraining store."""
    parser.add_argument("--extra", default=None,
                        help="also pretrain on the review text of this NSMC train file (data/ratings_train.json; "
                             "its dev split is left out, a test file is refused) (default: none)")
    parser.add_argument("--test", default=rel(NSMC_TEST_JSON),
                        help="the NSMC test file, read only to refuse an --extra file that shares its reviews")


def store_sources(input_path: str, extra: str | None) -> dict[str, str | None]:
    """What a store is built from, by file name, as its meta.json records it."""
    return {"input": "none" if input_path == "none" else Path(input_path).name,
            "extra": Path(extra).name if extra else None}


def pretraining_reviews(path: str | os.PathLike, test_path: str | os.PathLike) -> list[str]:
    """The review texts of an NSMC train file's pool (`common.nsmc.nsmc_split`), for pretraining.

    Task-adaptive pretraining may read the labelled reviews' text, never the text
    fine-tuning selects on (the dev split) or is scored on (the test file): the dev
    split is left out here by the very function train.py carves it with, and a file
    sharing a review id with the test file is refused."""
    rows = read_nsmc_json(path)
    test = Path(test_path)
    if test.is_file():
        if test.resolve() == Path(path).resolve():
            raise UserError(f"--extra {path} is the test file: pretraining text must come from the train split "
                            f"(pass data/ratings_train.json)")
        test_ids = {r["id"] for r in read_nsmc_json(test)}
        shared = sum(r["id"] in test_ids for r in rows)
        if shared:
            raise UserError(f"--extra {path} holds {shared:,} reviews of the test file {test}: pretraining text "
                            f"must come from the train split (pass data/ratings_train.json)")
    pool, _ = nsmc_split(len(rows))
    return [rows[i]["document"] for i in pool]


def pretraining_review_ids(vocab: Vocab, input_path: str, extra: str | None, test_path: str) -> list[list[int]]:
    """The token ids of the --extra reviews (`pretraining_reviews`; empty ones dropped), none without --extra;
    --input none with no --extra leaves nothing to build a store from."""
    if input_path == "none" and not extra:
        raise UserError("--input none leaves nothing to tokenize (pass --extra ../data/ratings_train.json, or a kowiki.json)")
    return [ids for ids in vocab.encode_batch(pretraining_reviews(extra, test_path)) if ids] if extra else []


def packed_reviews(reviews: Iterable[list[int]], n_seq: int) -> Iterator[np.ndarray]:
    """Reviews in order as `[CLS] r1 [SEP] r2 [SEP] ...` instances of at most n_seq tokens (a review longer
    than n_seq - 2 is cut); an instance is closed when the next review would not fit. The encoders'
    pretraining instances of review text: a review is too short to fill an instance, and the [SEP]
    between two reviews keeps a masked span from crossing from one into the next."""
    parts: list[list[int]] = [[CLS_ID]]
    length = 1
    for ids in reviews:
        review = [*ids[: n_seq - 2], SEP_ID]
        if length + len(review) > n_seq:
            yield np.concatenate(parts)
            parts, length = [[CLS_ID]], 1
        parts.append(review)
        length += len(review)
    if length > 1:
        yield np.concatenate(parts)


def check_output(path: str | os.PathLike, force: bool, n_seq: int | None = None, **built_with: object) -> bool:
    """True when the output must be (re)built; False when it exists and is kept.

    An existing store built with another --n_seq (or another of `built_with`, as
    recorded in its meta.json; a key it does not record counts as None) is not
    silently kept: that is an error."""
    p = Path(path)
    if not p.parent.is_dir():
        raise UserError(f"output folder does not exist: {p.parent} (create it, or pass another --output)")
    if p.exists() and not force:
        meta = _stored_meta(p)
        built = meta.get("n_seq")
        if n_seq is not None and built is not None and built != n_seq:
            raise UserError(f"{p} was built with --n_seq {built}, not {n_seq}: pass --force to rebuild it, "
                            f"or --n_seq {built} to keep it")
        for name, value in built_with.items():
            if meta and meta.get(name) != value:
                raise UserError(f"{p} was built with --{name} {meta.get(name)}, not {value}: pass --force to "
                                f"rebuild it, or another --output")
        print(f"{p} exists: kept as it is (pass --force to rebuild)")
        return False
    return True


def _stored_meta(store: Path) -> dict:
    try:
        meta = json.loads((store / "meta.json").read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}  # not a readable store: pretrain.py names the problem when it opens it


def _init_worker(vocab_path: str) -> None:
    global _worker_vocab
    _worker_vocab = Vocab(vocab_path)


def _tokenize_chunk(chunk: tuple[int, list[str]]) -> tuple[int, list[list[list[int]]] | int]:
    """-> (bytes read, articles) or (bytes read, number of the first bad line)."""
    assert _worker_vocab is not None
    first_lineno, lines = chunk
    out = []
    for i, line in enumerate(lines):
        try:
            paragraphs = [p for p in json.loads(line)["text"] if p.strip()]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            return 0, first_lineno + i
        out.append(_worker_vocab.encode_batch(paragraphs) if paragraphs else [])
    return sum(len(line.encode("utf-8")) for line in lines), out


def _chunks(path: Path, size: int) -> Iterator[tuple[int, list[str]]]:
    with open(path, encoding="utf-8") as f:
        numbered = ((n, line) for n, line in enumerate(f, 1) if line.strip())
        while chunk := list(islice(numbered, size)):
            yield chunk[0][0], [line for _, line in chunk]


def bounded_imap(pool: Pool, fn: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """`pool.imap(fn, items)` in order, with at most `ahead` items in flight.

    Pool.imap reads its whole input and lets finished results queue up without
    bound: when the consumer is slower than the workers (BERT's pairing and
    masking), memory grows with the corpus. Here a new item is submitted only
    when an old result is taken."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def corpus_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"corpus not found: {p} (build it with python data/kowiki.py from the repository root)")
    return p


def count_articles(path: str | os.PathLike) -> int:
    """The number of articles (non-blank lines) of kowiki.json, read without tokenizing."""
    with open(corpus_file(path), "rb") as f:
        return sum(1 for line in f if line.strip())


def tokenized_articles(path: str | os.PathLike, vocab_path: str | os.PathLike, workers: int,
                       chunk_size: int = 64) -> Iterator[list[list[int]]]:
    """Yield each article of kowiki.json as a list of paragraphs, each a list of token ids."""
    p = corpus_file(path)
    bar: tqdm | None = None  # opened with the first good chunk, so an input refused at once prints only its error
    chunks = _chunks(p, chunk_size)
    if workers == 1:
        _init_worker(str(vocab_path))
        results: Iterator[tuple[int, list[list[list[int]]] | int]] = map(_tokenize_chunk, chunks)
        pool = None
    else:
        pool = mp.get_context("spawn" if os.name == "nt" else "fork").Pool(workers, _init_worker, (str(vocab_path),))
        results = bounded_imap(pool, _tokenize_chunk, chunks, ahead=2 * workers)
    try:
        for n_bytes, articles in results:
            if isinstance(articles, int):
                raise UserError(f"{p}:{articles}: not a kowiki.json article line (rebuild it with python data/kowiki.py)")
            if bar is None:
                bar = tqdm(total=p.stat().st_size, unit="B", unit_scale=True, desc="tokenize", mininterval=1.0)
            bar.update(n_bytes)
            yield from articles
        if bar is None:
            raise UserError(f"{p} is empty: no article to tokenize (build it with python data/kowiki.py)")
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.terminate()

