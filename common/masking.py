"""Masking for masked-language-model pretraining, shared by BERT and SpanBERT.

The mechanisms work on one sequence at a time (a 1-D array of token ids) so that a
dataset's `collate` can mask every instance of a batch on the fly:

- whole words (`word_spans`): a word is a run of pieces that starts with a
  word-start piece (SentencePiece's "▁" marker, `Vocab.word_starts()`) and
  continues with the pieces that are not; special tokens ([CLS], [SEP], [PAD],
  [UNK] ...) belong to no word and are never masked.
- choosing positions: `choose_whole_words` (BERT: random whole words until
  mask_prob of the maskable tokens is reached) and `choose_spans` (SpanBERT:
  spans of whole words, below).
- replacing (`replace_tokens`): of the chosen positions 80% become [MASK], 10%
  a random non-special token and 10% keep the original; the labels are the
  original ids. With `groups`, the draw is made once per group (SpanBERT
  decides per span), else once per position (BERT).

Span masking (Joshi et al., 2020, section 3.1): span lengths, counted in whole
words, are drawn from Geo(p = 0.2) truncated to at most 10 words (mean 3.8),
each span's start is drawn uniformly among the word starts where it fits, and
spans are added until mask_prob of the segment's tokens are masked (in
expectation: see `choose_spans`; spanbert/data.py reports the share it measures
on its segments). Spans never overlap or touch, so the tokens just outside each
span (its boundary, read by the Span Boundary Objective) are never masked;
[CLS] and [SEP] can be boundaries.
The 80/10/10 replacement is drawn once per span.

Every function takes a `numpy.random.Generator`, so a caller that seeds it
(e.g. from the checkpointed torch RNG, or from (seed, epoch, index)) gets the
same masks again on resume.

    starts = word_start_table(vocab)                       # once
    masked, positions, labels = mask_whole_words(ids, starts, 0.15, rng, len(vocab))   # BERT
    spans = mask_spans(ids, starts, 0.15, rng, len(vocab))                              # SpanBERT
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.vocab import MASK_ID, SPECIAL_PIECES

N_SPECIAL = len(SPECIAL_PIECES)  # ids below this are special pieces: never masked, never drawn as random tokens
MASK_RATIO, RANDOM_RATIO = 0.8, 0.1  # the rest (0.1) keeps the original token
GEOMETRIC_P = 0.2  # the paper's p: short spans are the most frequent
MAX_SPAN_WORDS = 10  # the paper's clip on span lengths (in words)


def word_start_table(vocab: Any) -> np.ndarray:
    """(n_vocab,) bool: whether each id begins a word. `vocab` is a `common.vocab.Vocab`."""
    return np.asarray(vocab.word_starts(), dtype=bool)


def maskable(input_ids: np.ndarray) -> np.ndarray:
    """(T,) bool: positions that may be masked (every non-special token)."""
    return np.asarray(input_ids) >= N_SPECIAL


def word_spans(input_ids: np.ndarray, word_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole words of a sequence: (starts, ends), int64 arrays, ends exclusive, in order.

    A word starts at a maskable piece that is a word start or follows a
    non-maskable position, and runs over the following maskable pieces that are
    not word starts. Special tokens split words and belong to none.
    """
    m, begins, last = _word_marks(np.asarray(input_ids), word_starts)
    return np.flatnonzero(begins), np.flatnonzero(last) + 1


def _word_marks(ids: np.ndarray, word_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(maskable, first piece of a word, last piece of a word), each (T,) bool."""
    m = ids >= N_SPECIAL
    prev_m = np.empty_like(m)
    prev_m[:1], prev_m[1:] = False, m[:-1]
    begins = m & (word_starts[np.where(m, ids, 0)] | ~prev_m)
    last = m.copy()
    last[:-1] &= ~(m[1:] & ~begins[1:])  # the next piece does not extend this word
    return m, begins, last


def choose_whole_words(input_ids: np.ndarray, word_starts: np.ndarray, mask_prob: float,
                       rng: np.random.Generator, max_predictions: int | None = None) -> np.ndarray:
    """Sorted positions to mask: whole words in random order until round(mask_prob x maskable
    tokens) positions (at least 1 unless mask_prob is 0; at most `max_predictions`) are reached.

    As in BERT's create_pretraining_data.py, a word that would overshoot the
    budget is skipped and shorter words after it may still fill it.
    """
    ids = np.asarray(input_ids)
    m, begins, last = _word_marks(ids, word_starts)
    starts, ends = np.flatnonzero(begins), np.flatnonzero(last) + 1
    lengths = ends - starts
    n_candidates = int(lengths.sum())
    if n_candidates == 0 or mask_prob <= 0:
        return np.zeros(0, dtype=np.int64)
    budget = max(1, int(round(n_candidates * mask_prob)))
    if max_predictions is not None:
        budget = min(budget, max_predictions)
    order = rng.permutation(len(starts))
    # Fast path: the prefix of the shuffled words that fits; then fill what is left greedily.
    fits = np.cumsum(lengths[order]) <= budget
    n_prefix = len(order) if fits.all() else int(np.argmin(fits))
    chosen = np.zeros(len(starts), dtype=bool)
    chosen[order[:n_prefix]] = True
    left = budget - int(lengths[order[:n_prefix]].sum())
    shortest = int(lengths.min())
    for w in order[n_prefix:]:
        if left < shortest:
            break
        if lengths[w] <= left:
            chosen[w] = True
            left -= int(lengths[w])
    # Every maskable position lies in exactly one word: the number of word starts up to it, minus one.
    word_index = np.cumsum(begins) - 1
    return np.flatnonzero(m & chosen[np.maximum(word_index, 0)]).astype(np.int64)


def max_whole_word_masked(n_tokens: int, mask_prob: float) -> int:
    """The most positions `choose_whole_words` masks in a sequence of n_tokens: its budget never exceeds
    round(mask_prob x n_tokens) (at least 1)."""
    return max(1, int(round(n_tokens * mask_prob)))


def max_span_masked(n_tokens: int, mask_prob: float) -> int:
    """The most positions `choose_spans` masks in a sequence of n_tokens: fewer than the budget before the
    last span, and a span of at most the budget, so at most twice the budget less one."""
    return 2 * max_whole_word_masked(n_tokens, mask_prob) - 1


def replace_tokens(input_ids: np.ndarray, positions: np.ndarray, rng: np.random.Generator, n_vocab: int,
                   groups: np.ndarray | None = None, mask_id: int = MASK_ID) -> tuple[np.ndarray, np.ndarray]:
    """Apply the 80/10/10 replacement at `positions`: -> (masked copy of input_ids, labels).

    labels[i] is the original id at positions[i]. 80% -> [MASK], 10% -> a random
    non-special id in [N_SPECIAL, n_vocab), 10% -> unchanged. `groups` (same
    length as positions, ints >= 0) makes positions of one group share the
    draw (SpanBERT replaces a whole span the same way); default: one draw per position.
    """
    ids = np.asarray(input_ids)
    positions = np.asarray(positions, dtype=np.int64)
    out = ids.copy()
    labels = ids[positions].copy()
    if len(positions) == 0:
        return out, labels
    if groups is None:
        u = rng.random(len(positions))
    else:
        groups = np.asarray(groups, dtype=np.int64)
        u = rng.random(int(groups.max()) + 1)[groups]
    to_mask = u < MASK_RATIO
    to_random = (u >= MASK_RATIO) & (u < MASK_RATIO + RANDOM_RATIO)
    out[positions[to_mask]] = mask_id
    out[positions[to_random]] = rng.integers(N_SPECIAL, n_vocab, size=int(to_random.sum()))
    return out, labels


def mask_whole_words(input_ids: np.ndarray, word_starts: np.ndarray, mask_prob: float, rng: np.random.Generator,
                     n_vocab: int, max_predictions: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BERT's masking of one sequence: -> (masked ids, positions, labels)."""
    positions = choose_whole_words(input_ids, word_starts, mask_prob, rng, max_predictions)
    masked, labels = replace_tokens(input_ids, positions, rng, n_vocab)
    return masked, positions, labels


# --- SpanBERT: spans of whole words ------------------------------------------------------

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
