"""Masking for masked-language-model pretraining, shared by BERT and SpanBERT.

The mechanisms work on one sequence at a time (a 1-D array of token ids) so that a
dataset's `collate` can mask every instance of a batch on the fly:

- whole words (`word_spans`): a word is a run of pieces that starts with a
  word-start piece (SentencePiece's "▁" marker, `Vocab.word_starts()`) and
  continues with the pieces that are not; special tokens ([CLS], [SEP], [PAD],
  [UNK] ...) belong to no word and are never masked.
- choosing positions: `choose_whole_words` (BERT: random whole words until
  mask_prob of the maskable tokens is reached); SpanBERT chooses spans of
  whole words itself from `word_spans`.
- replacing (`replace_tokens`): of the chosen positions 80% become [MASK], 10%
  a random non-special token and 10% keep the original; the labels are the
  original ids. With `groups`, the draw is made once per group (SpanBERT
  decides per span), else once per position (BERT).
- packing (`pack`): rows of different lengths into one (B, width) array,
  padded with 0, the layout `common.encoder.masked_lm_loss` expects (positions
  padded with 0 and labels padded with [PAD] = 0, which the loss skips).

Every function takes a `numpy.random.Generator`, so a caller that seeds it
(e.g. from the checkpointed torch RNG, or from (seed, epoch, index)) gets the
same masks again on resume.

    starts = word_start_table(vocab)                       # once
    masked, positions, labels = mask_whole_words(ids, starts, 0.15, rng, len(vocab))
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from common.cli import UserError
from common.vocab import MASK_ID, SPECIAL_PIECES

N_SPECIAL = len(SPECIAL_PIECES)  # ids below this are special pieces: never masked, never drawn as random tokens
MASK_RATIO, RANDOM_RATIO = 0.8, 0.1  # the rest (0.1) keeps the original token


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


def pack(rows: Sequence[np.ndarray], width: int | None = None, fill: int = 0, dtype: Any = np.int64) -> np.ndarray:
    """Rows of different lengths -> (len(rows), width) array padded with `fill` on the right.

    width defaults to the longest row (at least 1, so an empty batch of masks keeps a column).
    """
    longest = max((len(r) for r in rows), default=0)
    width = max(longest, 1) if width is None else width
    if longest > width:
        raise ValueError(f"a row of {longest} does not fit width {width}")
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


class MaskedSegmentDataset:
    """Variable-length instances of a token store (`tokens` + `offsets`), masked anew
    at every `collate` (dynamic masking). BERT's and SpanBERT's pretraining data.

    The masks of a batch come from a generator seeded by one draw of torch's
    global RNG plus the batch's indices: the trainer checkpoints that RNG, so a
    resumed run draws exactly the masks the uninterrupted run would have, while
    each epoch sees new masks. Subclasses set `format` and write `collate`.
    """

    format = ""

    def __init__(self, store: Any, cfg: Any):
        if store.meta.get("format") != self.format:
            raise UserError(f"{store.path} is not {self.format} pretraining data (format {store.meta.get('format')!r}); "
                            f"build it with python data.py in {self.format}/")
        self.n_seq = store.check_n_seq(cfg.n_seq)
        self.tokens, self.offsets = store["tokens"], store["offsets"]
        self.word_starts = np.asarray(store["word_starts"], dtype=bool)
        self.mask_prob = float(store.meta["mask_prob"])
        self.n_vocab = cfg.n_vocab

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def instance(self, i: int) -> np.ndarray:
        """Token ids of instance i, special tokens included."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]].astype(np.int64)

    @staticmethod
    def batch_rng(indices: np.ndarray) -> np.random.Generator:
        """The generator a batch's masks are drawn from (see the class docstring)."""
        import torch

        draw = int(torch.randint(0, 2**62, (1,)))
        return np.random.default_rng([draw, *np.asarray(indices, dtype=np.int64).tolist()])
