"""bert/data.py's masking: whole words, the mask budget, 80/10/10 replacement; bert/pretrain.py's packing."""
from __future__ import annotations

import numpy as np
import pytest

from bert.data import choose_whole_words, mask_whole_words, maskable, replace_tokens, word_spans
from bert.pretrain import pack
from common.vocab import CLS_ID, MASK_ID, N_SPECIAL, PAD_ID, SEP_ID, UNK_ID

N_VOCAB = 500


def word_start_table(seed: int = 0, share: float = 0.4) -> np.ndarray:
    """A synthetic vocab: about `share` of the pieces begin a word; special ids count as starts."""
    table = np.random.default_rng(seed).random(N_VOCAB) < share
    table[:N_SPECIAL] = True
    return table


def bert_like_sequence(rng: np.random.Generator, length: int = 200, pad: int = 20) -> np.ndarray:
    """[CLS] A [SEP] B [SEP] [PAD]..., with a few [UNK] inside the text."""
    text = rng.integers(N_SPECIAL, N_VOCAB, size=length)
    text[rng.random(length) < 0.01] = UNK_ID
    cut = length // 3
    return np.concatenate([[CLS_ID], text[:cut], [SEP_ID], text[cut:], [SEP_ID], np.full(pad, PAD_ID)])


def test_word_spans_follow_word_starts_and_break_at_specials() -> None:
    starts = np.zeros(20, dtype=bool)
    starts[:N_SPECIAL] = True
    starts[[7, 9, 12]] = True
    #              CLS  w7 +8 +8  w9 SEP  10  w12 +13 SEP PAD
    ids = np.array([CLS_ID, 7, 8, 8, 9, SEP_ID, 10, 12, 13, SEP_ID, PAD_ID])
    s, e = word_spans(ids, starts)
    # a continuation piece right after a special token (10 after [SEP]) begins a word of its own
    assert list(zip(s.tolist(), e.tolist())) == [(1, 4), (4, 5), (6, 7), (7, 9)]
    assert maskable(ids).tolist() == [False, True, True, True, True, False, True, True, True, False, False]


def test_masking_statistics_on_a_large_sample() -> None:
    starts = word_start_table()
    rng = np.random.default_rng(1)
    n_maskable = n_masked = n_mask = n_random = n_kept = 0
    for _ in range(300):
        ids = bert_like_sequence(rng)
        masked, positions, labels = mask_whole_words(ids, starts, 0.15, rng, N_VOCAB)
        # never a special token, labels are the originals, nothing else changes
        assert (ids[positions] >= N_SPECIAL).all()
        assert (labels == ids[positions]).all()
        others = np.ones(len(ids), dtype=bool)
        others[positions] = False
        assert (masked[others] == ids[others]).all()
        assert (positions == np.sort(positions)).all() and len(np.unique(positions)) == len(positions)
        # whole words: a word is masked entirely or not at all
        chosen = np.zeros(len(ids), dtype=bool)
        chosen[positions] = True
        for s, e in zip(*word_spans(ids, starts)):
            assert chosen[s:e].all() or not chosen[s:e].any()
        # a random replacement is never a special token
        out = masked[positions]
        assert ((out == MASK_ID) | (out >= N_SPECIAL)).all()
        n_maskable += int(maskable(ids).sum())
        n_masked += len(positions)
        n_mask += int((out == MASK_ID).sum())
        n_kept += int((out == labels).sum())
        n_random += int(((out != MASK_ID) & (out != labels)).sum())
    assert n_masked / n_maskable == pytest.approx(0.15, abs=0.005)
    assert n_mask / n_masked == pytest.approx(0.8, abs=0.02)
    assert n_random / n_masked == pytest.approx(0.1, abs=0.015)
    assert n_kept / n_masked == pytest.approx(0.1, abs=0.015)


def test_budget_is_exact_when_words_allow_it_and_capped_by_max_predictions() -> None:
    starts = np.ones(N_VOCAB, dtype=bool)  # every piece is a word: the budget is always reachable
    ids = np.concatenate([[CLS_ID], np.arange(N_SPECIAL, N_SPECIAL + 100), [SEP_ID]])
    rng = np.random.default_rng(0)
    assert len(choose_whole_words(ids, starts, 0.15, rng)) == 15
    assert len(choose_whole_words(ids, starts, 0.15, rng, max_predictions=4)) == 4
    assert len(choose_whole_words(ids[:3], starts, 0.15, rng)) == 1  # at least one token
    assert len(choose_whole_words(ids, starts, 0.0, rng)) == 0
    assert len(choose_whole_words(np.array([CLS_ID, SEP_ID, PAD_ID]), starts, 0.15, rng)) == 0


def test_long_words_are_skipped_not_cut_to_fit_the_budget() -> None:
    starts = np.zeros(N_VOCAB, dtype=bool)
    starts[:N_SPECIAL] = True
    starts[10] = True
    # one word of 10 pieces (10, 11 x 9) then 10 one-piece words (10 each)
    ids = np.array([CLS_ID, 10, *[11] * 9, *[10] * 10, SEP_ID])
    for seed in range(20):
        positions = choose_whole_words(ids, starts, 0.15, np.random.default_rng(seed))
        assert len(positions) == 3  # round(0.15 * 20): three one-piece words, never part of the long one
        assert (positions >= 11).all()


def test_replacement_shares_one_draw_per_group() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(N_SPECIAL, N_VOCAB, size=4000)
    positions = np.arange(0, 4000, 2)
    groups = np.repeat(np.arange(400), 5)  # spans of five masked positions
    out, labels = replace_tokens(ids, positions, rng, N_VOCAB, groups=groups)
    is_mask = (out[positions] == MASK_ID).reshape(400, 5)
    is_kept = (out[positions] == labels).reshape(400, 5)
    assert (is_mask.all(1) | ~is_mask.any(1)).all()  # a span is masked entirely or not at all
    assert is_mask.all(1).mean() == pytest.approx(0.8, abs=0.06)
    assert is_kept.all(1).mean() == pytest.approx(0.1, abs=0.05)  # kept entirely
    # replaced by random tokens entirely (a random draw equal to the original is the rare exception)
    assert (~is_mask.any(1) & ~is_kept.all(1)).mean() == pytest.approx(0.1, abs=0.05)
    assert (labels == ids[positions]).all()


def test_same_generator_seed_gives_the_same_masks() -> None:
    starts = word_start_table()
    ids = bert_like_sequence(np.random.default_rng(5))
    a = mask_whole_words(ids, starts, 0.15, np.random.default_rng(7), N_VOCAB)
    b = mask_whole_words(ids, starts, 0.15, np.random.default_rng(7), N_VOCAB)
    c = mask_whole_words(ids, starts, 0.15, np.random.default_rng(8), N_VOCAB)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[1].shape == c[1].shape and (a[1] == c[1]).all())


def test_pack_pads_rows_to_a_fixed_width() -> None:
    rows = [np.array([3, 4, 5]), np.array([], dtype=np.int64), np.array([9])]
    assert pack(rows).tolist() == [[3, 4, 5], [0, 0, 0], [9, 0, 0]]
    assert pack(rows, width=4, fill=-1).tolist() == [[3, 4, 5, -1], [-1, -1, -1, -1], [9, -1, -1, -1]]
    assert pack([np.array([], dtype=np.int64)]).shape == (1, 1)  # one column even when nothing is masked
    with pytest.raises(ValueError):
        pack(rows, width=2)
