"""Turn data/kowiki.json into SpanBERT's pretraining data: single contiguous segments.

Each instance is [CLS] tokens [SEP]: one stretch of one article, at most
n_seq - 2 tokens, cut at a word start (no next sentence prediction, no second
segment: SpanBERT trains on single segments). An article longer than that
gives several consecutive segments.

`--extra ../data/ratings_train.json` adds the NSMC train split's review text
(task-adaptive pretraining; the dev split is left out, the test file refused), in
front of the articles: reviews are short, so they are packed, in order, into
instances `[CLS] r1 [SEP] r2 [SEP] ...` of at most n_seq tokens; a span never
crosses a [SEP], so it stays inside one review. `--input none`: reviews alone.

Masks are NOT stored: like BERT's, the pretraining dataset draws them anew for
every batch (dynamic masking, see README.md), with `mask_spans` below, so the
store holds the token ids once.

Span masking (Joshi et al., 2020, section 3.1) is `choose_spans` below;
`build` reports the share of tokens it masks on the store's segments.

Store layout (np.memmap arrays, see common/token_store.py):
  tokens      uint16  all instances' ids, [CLS] ... [SEP] each, concatenated
  offsets     int64   n + 1 boundaries: instance i is tokens[offsets[i]:offsets[i+1]]
  word_starts uint8   per vocab id: 1 if the piece begins a word (spans are whole words)
"""
from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bert.data import max_whole_word_masked, replace_tokens, word_spans
from common.cli import DATA_DIR, UserError, probability, run_main
from common.prep import (add_review_text_args, check_output, data_parser, load_store_vocab, packed_reviews,
                         pretraining_review_ids, store_sources, tokenized_articles)
from common.token_store import StoreWriter, TokenStore
from common.vocab import CLS_ID, SEP_ID, word_start_table

# --- span masking (Joshi et al., 2020, section 3.1; pretrain.py masks every segment anew with it) ------
#
# Span lengths, counted in whole words (bert/data.py's `word_spans`), are drawn from Geo(p = 0.2)
# truncated to at most 10 words (mean 3.8); each span's start is drawn uniformly among the word starts
# where it fits, and spans are added until mask_prob of the segment's tokens are masked (in expectation:
# see `choose_spans`; `build` reports the share it measures). Spans never overlap or touch, so the tokens
# just outside each span (its boundary, read by the Span Boundary Objective) are never masked; [CLS] and
# [SEP] can be boundaries. The 80/10/10 replacement (bert/data.py's `replace_tokens`) is drawn once per span.

GEOMETRIC_P = 0.2  # the paper's p: short spans are the most frequent
MAX_SPAN_WORDS = 10  # the paper's clip on span lengths (in words)


def max_span_masked(n_tokens: int, mask_prob: float) -> int:
    """The most positions `choose_spans` masks in a sequence of n_tokens: fewer than the budget before the
    last span, and a span of at most the budget, so at most twice the budget less one."""
    return 2 * max_whole_word_masked(n_tokens, mask_prob) - 1


def span_length_probs(p: float = GEOMETRIC_P, max_span: int = MAX_SPAN_WORDS) -> np.ndarray:
    """P(length = 1 .. max_span): Geo(p) truncated to max_span and renormalized, as in the
    authors' code (mean 3.8 for p = 0.2; piling the tail onto 10 instead would give 4.5)."""
    probs = p * (1 - p) ** np.arange(max_span)
    return probs / probs.sum()


def choose_spans(input_ids: np.ndarray, word_starts: np.ndarray, mask_prob: float, rng: np.random.Generator,
                 p: float = GEOMETRIC_P, max_span: int = MAX_SPAN_WORDS,
                 max_failures: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick spans of whole words to mask in one sequence: -> (starts, ends, lengths in words),
    token positions with ends exclusive, sorted by start.

    Repeat until the budget, round(mask_prob x maskable tokens) tokens (at least 1), is
    reached: draw a length L in words, then a start uniformly among the words where L
    words fit: without overlapping or touching a span already chosen (a token of gap on
    both sides, so each span's boundary tokens stay visible), without crossing a special
    token, and within the budget in tokens (so a run of text without spaces, one long
    "word", is never masked whole, nor most of a short segment). A length with no place
    left is redrawn; after `max_failures` such draws masking stops.

    A span that would cross the budget, with `remaining` tokens of it left, is kept whole
    with probability remaining / its length, and otherwise dropped, which ends the
    masking: the expected number of masked tokens is then the budget, so the expected
    share masked is mask_prob (keeping that span always gave 18-20% at n_seq 128), and
    spans stay whole words (the authors' code cuts the crossing span mid-word).
    """
    ids = np.asarray(input_ids)
    w_start, w_end = word_spans(ids, word_starts)
    n_words, T = len(w_start), len(ids)
    n_maskable = int((w_end - w_start).sum())
    empty = np.zeros(0, dtype=np.int64)
    if n_words == 0 or mask_prob <= 0:
        return empty, empty, empty
    budget = max(1, int(round(n_maskable * mask_prob)))
    # breaks[k]: special tokens between word 0 and word k (a span's words must be adjacent).
    breaks = np.concatenate([[0], np.cumsum(w_end[:-1] != w_start[1:])]).tolist()
    starts_of, ends_of = w_start.tolist(), w_end.tolist()
    masked = bytearray(T)

    def fits(w: int, L: int) -> bool:
        """L words from word w: at most `budget` tokens, a free boundary token on each side,
        nothing masked, no special token inside."""
        last = w + L - 1
        lo, hi = starts_of[w] - 1, ends_of[last]  # the boundary tokens
        return (lo >= 0 and hi < T and hi - lo - 1 <= budget and breaks[last] == breaks[w]
                and 1 not in masked[lo : hi + 1])

    # A scalar loop: Python's generator (seeded from rng) costs ~0.1 us a draw, numpy's ~2 us.
    r = random.Random(int(rng.integers(2**63)))
    cdf = np.cumsum(span_length_probs(p, max_span)).tolist()
    spans: list[tuple[int, int, int]] = []
    n_masked = failures = 0
    while n_masked < budget and failures < max_failures:
        L = min(bisect.bisect_right(cdf, r.random()), max_span - 1) + 1  # inverse CDF
        n_first = n_words - L + 1  # words a span of L words can start at
        w = None
        for _ in range(16 if n_first > 0 else 0):  # rejection sampling: uniform among the places that fit
            c = r.randrange(n_first)
            if fits(c, L):
                w = c
                break
        if w is None:  # crowded: list every place that fits, and draw among them (uniform as well)
            places = [c for c in range(max(n_first, 0)) if fits(c, L)]
            if not places:
                failures += 1
                continue
            w = places[r.randrange(len(places))]
        s, e = starts_of[w], ends_of[w + L - 1]
        if n_masked + e - s > budget and r.random() * (e - s) >= budget - n_masked:
            break  # the crossing span is dropped (see above): the expected total is the budget
        masked[s:e] = b"\x01" * (e - s)
        spans.append((s, e, L))
        n_masked += e - s
    if not spans:
        return empty, empty, empty
    starts, ends, lengths = (np.asarray(c, dtype=np.int64) for c in zip(*sorted(spans)))
    return starts, ends, lengths


@dataclass
class SpanMasking:
    """One sequence's masking. Per masked token (M of them, in position order):
    positions, labels (the original ids), span_left / span_right (positions of the
    boundary tokens of its span: the tokens just before and just after it) and
    span_offset (its place in the span, 0 for the first token)."""

    input_ids: np.ndarray  # (T,) the sequence with the spans replaced
    positions: np.ndarray
    labels: np.ndarray
    span_left: np.ndarray
    span_right: np.ndarray
    span_offset: np.ndarray


def mask_spans(input_ids: np.ndarray, word_starts: np.ndarray, mask_prob: float, rng: np.random.Generator,
               n_vocab: int, p: float = GEOMETRIC_P, max_span: int = MAX_SPAN_WORDS) -> SpanMasking:
    """SpanBERT's masking of one sequence: choose spans, replace them 80/10/10 per span."""
    starts, ends, _ = choose_spans(input_ids, word_starts, mask_prob, rng, p, max_span)
    lengths = ends - starts
    span_of = np.repeat(np.arange(len(starts)), lengths)  # the span of each masked token
    offset = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = starts[span_of] + offset
    masked, labels = replace_tokens(input_ids, positions, rng, n_vocab, groups=span_of)
    return SpanMasking(masked, positions, labels, starts[span_of] - 1, ends[span_of], offset)

DEFAULT_OUTPUT = DATA_DIR / "kowiki_spanbert"


# --- segments --------------------------------------------------------------------------

def segments(ids: np.ndarray, max_tokens: int, word_starts: np.ndarray) -> Iterator[np.ndarray]:
    """Cut one article's ids into consecutive pieces of at most `max_tokens`, each cut
    moved back to a word start so that no word is split (unless one word alone is longer)."""
    start = 0
    while start < len(ids):
        end = min(start + max_tokens, len(ids))
        if end < len(ids):
            starts = np.flatnonzero(word_starts[ids[start + 1 : end + 1]]) + start + 1  # word starts in (start, end]
            if len(starts):
                end = int(starts[-1])
        yield ids[start:end]
        start = end


# --- the store ---------------------------------------------------------------------------

def build(input_path: str, output: str, n_seq: int, vocab_path: str, workers: int, mask_prob: float = 0.15,
          extra: str | None = None, test_path: str = "") -> dict:
    vocab = load_store_vocab(vocab_path)
    if n_seq < 3:
        raise UserError(f"--n_seq {n_seq} is too short for [CLS] tokens [SEP]; use at least 3")
    reviews = pretraining_review_ids(vocab, input_path, extra, test_path)
    word_starts = word_start_table(vocab)
    counts = {"n_articles": 0, "n_instances": 0, "n_tokens": 0, "n_reviews": len(reviews), "n_review_instances": 0}
    meta = {"format": "spanbert", "n_seq": n_seq, "mask_prob": mask_prob, "geometric_p": GEOMETRIC_P,
            "max_span_words": MAX_SPAN_WORDS, "vocab_fingerprint": vocab.fingerprint, "vocab_size": len(vocab),
            **store_sources(input_path, extra)}
    with StoreWriter(output, meta) as store:
        store.append("word_starts", word_starts.astype(np.uint8))

        def instances() -> Iterator[tuple[np.ndarray, dict]]:
            for ids in packed_reviews(reviews, n_seq):  # in front: a held-out tail of articles stays articles
                counts["n_review_instances"] += 1
                yield ids, {}
            articles = tokenized_articles(input_path, vocab_path, workers) if input_path != "none" else []
            for paragraphs in articles:
                ids = np.asarray([t for p in paragraphs for t in p], dtype=np.int64)
                if len(ids):
                    counts["n_articles"] += 1
                    for segment in segments(ids, n_seq - 2, word_starts):
                        yield np.concatenate([[CLS_ID], segment, [SEP_ID]]), {}

        counts["n_instances"], counts["n_tokens"] = store.write_instances(instances())
        if counts["n_instances"] == 0:
            raise UserError(f"{input_path} yields no segment (use a bigger corpus)")
        store.meta.update(counts)
    n = counts["n_instances"]
    share = measured_mask_share(output, word_starts, mask_prob)
    reviews_part = (f"; {counts['n_reviews']:,} reviews packed into {counts['n_review_instances']:,} of them"
                    if extra else "")
    print(f"wrote {output}: {counts['n_articles']:,} articles, {n:,} segments of at most {n_seq} tokens "
          f"({counts['n_tokens'] / n:.0f} on average{reviews_part}); span masking at --mask_prob {mask_prob:g} masks "
          f"{share:.1%} of the maskable tokens (measured on up to 2,000 segments)")
    return store.meta


def measured_mask_share(store_path: str, word_starts: np.ndarray, mask_prob: float, n: int = 2000) -> float:
    """The share of maskable (word) tokens `choose_spans` masks, over the store's first n segments."""
    store = TokenStore(store_path)
    tokens, offsets = store["tokens"], store["offsets"]
    rng = np.random.default_rng(0)
    masked = maskable = 0
    for i in range(min(n, len(offsets) - 1)):
        ids = np.asarray(tokens[offsets[i] : offsets[i + 1]], dtype=np.int64)
        starts, ends, _ = choose_spans(ids, word_starts, mask_prob, rng)
        w_start, w_end = word_spans(ids, word_starts)
        masked += int((ends - starts).sum())
        maskable += int((w_end - w_start).sum())
    return masked / max(maskable, 1)


def main() -> None:
    parser = data_parser(__doc__.splitlines()[0], DEFAULT_OUTPUT, n_seq=512)
    parser.add_argument("--mask_prob", type=probability, default=0.15,
                        help="share of the tokens masked (spans of whole words), drawn anew for every batch at pretraining")
    add_review_text_args(parser)
    args = parser.parse_args()
    run_main(lambda: check_output(args.output, args.force, args.n_seq, extra=store_sources(args.input, args.extra)["extra"])
             and build(args.input, args.output, args.n_seq, args.vocab, args.workers, args.mask_prob, args.extra,
                       args.test))


if __name__ == "__main__":
    main()
