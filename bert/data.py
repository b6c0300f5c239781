"""Turn data/kowiki.json into BERT's pretraining data: sentence pairs for MLM + NSP.

Each instance is [CLS] A [SEP] B [SEP]. As in BERT's create_pretraining_data.py,
an article's paragraphs are split into sentences, sentences are accumulated
up to a target length (n_seq - 3, or a random shorter one with probability
--short_seq_prob), the chunk is cut at a random sentence boundary into A and
B, and half of the time B is replaced by text from another article (the next
sentence prediction label: 1 = B follows A, 0 = B is random); the longer side
is truncated, at a random end, until the pair fits.

`--extra ../data/ratings_train.json` adds the NSMC train split's review text
(task-adaptive pretraining; the dev split is left out, the test file refused), in
front of the articles. A review is a document of one or two short sentences:
too short for a sentence pair, and two reviews side by side are unrelated text,
so reviews make no NSP pairs. They are packed, in order, into MLM-only instances
`[CLS] r1 [SEP] r2 [SEP] ...` of at most n_seq tokens, all in segment A (as
RoBERTa packs full sentences across documents), with the NSP label NO_NSP, which
the NSP loss skips. `--input none` builds a store of the reviews alone.

pretrain.py holds out the store's tail. The last --heldout of the articles (at
least two) are paired among themselves, after all the others, and the store
declares their instances (`heldout_instances`): a held-out pair never takes its
random B from a training article, nor a training pair from a held-out one.

Masks are NOT stored: the pretraining dataset draws them on the fly for every
batch (dynamic masking, see README.md), so the store holds the token ids once.
"Another article" is drawn from a bounded buffer of the last --nsp_buffer
articles, so memory stays flat whatever the corpus size.

Store layout (np.memmap arrays, see common/token_store.py):
  tokens      uint16  all instances' ids, [CLS] A [SEP] B [SEP] each, concatenated
  offsets     int64   n + 1 boundaries: instance i is tokens[offsets[i]:offsets[i+1]]
  len_a       uint16  length of "[CLS] A [SEP]" (token_type_ids are 1 from there on)
  is_next     uint8   NSP label (1 = B follows A, 0 = B is random, NO_NSP = packed reviews, no pair)
  word_starts uint8   per vocab id: 1 if the piece begins a word (whole-word masking)
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import numpy as np

from common.cli import DATA_DIR, UserError, positive_int, probability, run_main
from common.prep import (add_review_text_args, check_output, count_articles, data_parser, load_store_vocab,
                         packed_reviews, pretraining_review_ids, store_sources, tokenized_articles)
from common.token_store import StoreWriter
from common.vocab import CLS_ID, MASK_ID, N_SPECIAL, SEP_ID, Vocab, word_start_table

# --- masking: whole words, 80/10/10 (pretrain.py masks every instance anew with these) ----------------
#
# A word is a run of pieces that starts with a word-start piece (SentencePiece's "▁" marker,
# `Vocab.word_starts()`) and continues with the pieces that are not; special tokens ([CLS], [SEP],
# [PAD], [UNK] ...) belong to no word and are never masked. BERT chooses random whole words until
# mask_prob of the maskable tokens is reached (`choose_whole_words`); of the chosen positions 80% become
# [MASK], 10% a random non-special token and 10% keep the original, the labels being the original ids
# (`replace_tokens`). SpanBERT (spanbert/data.py) chooses spans of these words and replaces per span.
# Every function takes a `numpy.random.Generator`: a caller that seeds it gets the same masks on resume.

MASK_RATIO, RANDOM_RATIO = 0.8, 0.1  # the rest (0.1) keeps the original token


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

DEFAULT_OUTPUT = DATA_DIR / "kowiki_bert"
SENTENCE_END = (".", "?", "!")
NO_NSP = 2  # the is_next of an instance without a sentence pair (packed reviews)

Article = list[np.ndarray]  # an article as a list of sentences (arrays of token ids)
Pair = tuple[np.ndarray, np.ndarray, int]  # (tokens A, tokens B, is_next)


def sentence_end_table(vocab: Vocab) -> np.ndarray:
    """(n_vocab,) bool: pieces that can end a sentence (they end with . ? or !)."""
    return np.array([vocab.id_to_piece(i).endswith(SENTENCE_END) for i in range(len(vocab))], dtype=bool)


def split_sentences(paragraph: list[int], sentence_end: np.ndarray, word_starts: np.ndarray) -> list[np.ndarray]:
    """Cut a paragraph's ids after each sentence-final piece that a new word follows
    (so "3.5" or "U.S" stay whole)."""
    ids = np.asarray(paragraph, dtype=np.int64)
    if len(ids) < 2:
        return [ids] if len(ids) else []
    cuts = np.flatnonzero(sentence_end[ids[:-1]] & word_starts[ids[1:]]) + 1
    return [s for s in np.split(ids, cuts) if len(s)]


def truncate_pair(a: np.ndarray, b: np.ndarray, max_tokens: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Drop one token at a random end of the longer of a, b until both fit in max_tokens."""
    bounds = [[0, len(a)], [0, len(b)]]
    while sum(hi - lo for lo, hi in bounds) > max_tokens:
        longer = bounds[0] if bounds[0][1] - bounds[0][0] > bounds[1][1] - bounds[1][0] else bounds[1]
        if rng.random() < 0.5:
            longer[0] += 1  # from the front
        else:
            longer[1] -= 1  # from the back
    return a[bounds[0][0]:bounds[0][1]], b[bounds[1][0]:bounds[1][1]]


def article_pairs(article: Article, pick_other: Callable[[], Article], max_tokens: int, short_seq_prob: float,
                  rng: np.random.Generator) -> Iterator[Pair]:
    """The pairs of one article (BERT's create_instances_from_document), len(A) + len(B) <= max_tokens.

    `pick_other()` returns another article (never this one) to take a random B from.
    """
    target = max_tokens
    if rng.random() < short_seq_prob:  # some short instances, so that short fine-tuning inputs are not new
        target = int(rng.integers(2, max_tokens + 1))
    chunk: list[np.ndarray] = []
    length, i = 0, 0
    while i < len(article):
        chunk.append(article[i])
        length += len(article[i])
        if i == len(article) - 1 or length >= target:
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1  # A = chunk[:a_end]
            tokens_a = np.concatenate(chunk[:a_end])
            if len(chunk) == 1 or rng.random() < 0.5:
                is_next = 0
                other = pick_other()
                b_parts, b_len = [], 0
                for sentence in other[int(rng.integers(len(other))):]:
                    b_parts.append(sentence)
                    b_len += len(sentence)
                    if b_len >= target - len(tokens_a):
                        break
                tokens_b = np.concatenate(b_parts)
                i -= len(chunk) - a_end  # the unused sentences go back, for the next chunk
            else:
                is_next = 1
                tokens_b = np.concatenate(chunk[a_end:])
            tokens_a, tokens_b = truncate_pair(tokens_a, tokens_b, max_tokens, rng)
            yield tokens_a, tokens_b, is_next
            chunk, length = [], 0
        i += 1


def corpus_pairs(articles: Iterable[Article], max_tokens: int, short_seq_prob: float, rng: np.random.Generator,
                 buffer_size: int) -> Iterator[Pair]:
    """The pairs of every article. Random B segments come from a buffer of the last
    `buffer_size` articles (those before the article and the one after it), so memory
    is bounded: each article is processed once the next has arrived, so even the
    first one has another article to draw from.
    """
    buffer: deque[Article] = deque(maxlen=max(buffer_size, 2))

    def pick_other() -> Article:  # the article processed is always buffer[-2]
        j = int(rng.integers(len(buffer) - 1))
        return buffer[j if j < len(buffer) - 2 else len(buffer) - 1]

    for article in articles:
        if not article:
            continue
        buffer.append(article)
        if len(buffer) >= 2:
            yield from article_pairs(buffer[-2], pick_other, max_tokens, short_seq_prob, rng)
    if len(buffer) < 2:
        raise UserError("the corpus holds fewer than two articles: next sentence prediction needs two at least")
    # The last article: now it is buffer[-1]; draw among the others.
    last = buffer[-1]
    yield from article_pairs(last, lambda: buffer[int(rng.integers(len(buffer) - 1))], max_tokens, short_seq_prob, rng)


def corpus_pairs_held_out(articles: Iterable[Article], n_articles: int, n_heldout: int, max_tokens: int,
                          short_seq_prob: float, rng: np.random.Generator,
                          buffer_size: int) -> Iterator[tuple[Pair, bool]]:
    """(pair, held out) for every pair: the first n_articles - n_heldout articles' pairs, then the last
    n_heldout articles' (if any), paired among themselves: no held-out instance holds training text as its
    B, and no training instance a held-out article's."""
    stream = iter(articles)
    groups = [(islice(stream, n_articles - n_heldout), False), (stream, True)] if n_heldout else [(stream, False)]
    for group, is_heldout in groups:
        for pair in corpus_pairs(group, max_tokens, short_seq_prob, rng, buffer_size):
            yield pair, is_heldout


def heldout_article_count(n_articles: int, share: float) -> int:
    """How many of the corpus' last articles are held out: round(share x n_articles), at least two (a random B
    needs another held-out article), none when share is 0 or the rest would be fewer than two articles."""
    n_heldout = max(2, int(round(n_articles * share))) if share > 0 else 0
    return n_heldout if n_articles - n_heldout >= 2 else 0


def build(input_path: str, output: str, n_seq: int, vocab_path: str, workers: int, mask_prob: float = 0.15,
          short_seq_prob: float = 0.1, nsp_buffer: int = 1000, seed: int = 12345, extra: str | None = None,
          test_path: str = "", heldout: float = 0.01) -> dict:
    vocab = load_store_vocab(vocab_path)
    if n_seq < 5:
        raise UserError(f"--n_seq {n_seq} is too short for [CLS] A [SEP] B [SEP]; use at least 5")
    reviews = pretraining_review_ids(vocab, input_path, extra, test_path)
    word_starts = word_start_table(vocab)
    sentence_end = sentence_end_table(vocab)
    rng = np.random.default_rng(seed)
    counts = {"n_articles": 0, "n_instances": 0, "n_tokens": 0, "n_is_next": 0, "n_reviews": len(reviews),
              "n_review_instances": 0, "heldout_articles": 0, "heldout_instances": 0}
    n_corpus = count_articles(input_path) if input_path != "none" else 0
    counts["heldout_articles"] = heldout_article_count(n_corpus, heldout)

    def articles(paragraph_lists: Iterator[list[list[int]]]) -> Iterator[Article]:
        for paragraphs in paragraph_lists:
            article = [s for p in paragraphs for s in split_sentences(p, sentence_end, word_starts)]
            if article:
                counts["n_articles"] += 1
                yield article

    meta = {"format": "bert", "n_seq": n_seq, "mask_prob": mask_prob, "short_seq_prob": short_seq_prob,
            "nsp_buffer": nsp_buffer, "seed": seed, "heldout": heldout, "vocab_fingerprint": vocab.fingerprint,
            "vocab_size": len(vocab), **store_sources(input_path, extra)}
    with StoreWriter(output, meta) as store:
        store.append("word_starts", word_starts.astype(np.uint8))

        def instances() -> Iterator[tuple[np.ndarray, dict]]:
            for ids in packed_reviews(reviews, n_seq):  # in front: a held-out tail of articles stays articles
                counts["n_review_instances"] += 1
                yield ids, {"len_a": len(ids), "is_next": NO_NSP}
            if input_path == "none":
                return
            # The held-out articles (the corpus' last ones, pretrain.py's held-out tail) are paired among
            # themselves, and the others never draw a B from them: held-out instances hold no training text.
            pairs = corpus_pairs_held_out(articles(tokenized_articles(input_path, vocab_path, workers)), n_corpus,
                                          counts["heldout_articles"], n_seq - 3, short_seq_prob, rng, nsp_buffer)
            for (a, b, label), is_heldout in pairs:
                counts["n_is_next"] += label
                counts["heldout_instances"] += is_heldout
                yield np.concatenate([[CLS_ID], a, [SEP_ID], b, [SEP_ID]]), {"len_a": len(a) + 2, "is_next": label}

        counts["n_instances"], counts["n_tokens"] = store.write_instances(
            instances(), columns={"len_a": np.uint16, "is_next": np.uint8})
        if counts["n_instances"] == 0:
            raise UserError(f"{input_path} yields no sentence pair (use a bigger corpus)")
        store.meta.update(counts)
    n, n_pairs = counts["n_instances"], counts["n_instances"] - counts["n_review_instances"]
    pairs = f"{counts['n_is_next'] / n_pairs:.1%} of the pairs with B following A" if n_pairs else "no sentence pair"
    reviews_part = (f"; {counts['n_reviews']:,} reviews packed into {counts['n_review_instances']:,} MLM-only "
                    f"instances" if extra else "")
    heldout_part = (f"; the last {counts['heldout_articles']:,} articles ({counts['heldout_instances']:,} instances, "
                    f"paired among themselves) held out" if counts["heldout_articles"] else "")
    print(f"wrote {output}: {counts['n_articles']:,} articles, {n:,} instances of at most {n_seq} tokens "
          f"({counts['n_tokens'] / n:.0f} on average, {pairs}){reviews_part}{heldout_part}")
    return store.meta


def main() -> None:
    parser = data_parser(__doc__.splitlines()[0], DEFAULT_OUTPUT, n_seq=512)
    parser.add_argument("--mask_prob", type=probability, default=0.15,
                        help="share of the tokens masked (whole words), drawn anew for every batch at pretraining")
    parser.add_argument("--short_seq_prob", type=probability, default=0.1,
                        help="share of articles whose pairs aim at a random shorter length (as BERT's code)")
    parser.add_argument("--nsp_buffer", type=positive_int, default=1000,
                        help="random B segments come from this many neighbouring articles (bounds memory)")
    parser.add_argument("--seed", type=int, default=12345, help="random seed of the pairing (BERT's default)")
    parser.add_argument("--heldout", type=probability, default=0.01,
                        help="share of the articles (the last ones, at least two; 0: none) held out for pretrain.py's "
                             "held-out metrics, paired only among themselves so that no held-out B is training text")
    add_review_text_args(parser)
    args = parser.parse_args()
    run_main(lambda: check_output(args.output, args.force, args.n_seq, extra=store_sources(args.input, args.extra)["extra"])
             and build(args.input, args.output, args.n_seq, args.vocab, args.workers, args.mask_prob,
                       args.short_seq_prob, args.nsp_buffer, args.seed, args.extra, args.test, args.heldout))


if __name__ == "__main__":
    main()
