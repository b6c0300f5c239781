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

Span masking (Joshi et al., 2020, section 3.1) is `common.masking.choose_spans`;
data.py reports the share of tokens it masks on the store's segments.

Store layout (np.memmap arrays, see common/token_store.py):
  tokens      uint16  all instances' ids, [CLS] ... [SEP] each, concatenated
  offsets     int64   n + 1 boundaries: instance i is tokens[offsets[i]:offsets[i+1]]
  word_starts uint8   per vocab id: 1 if the piece begins a word (spans are whole words)
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from common.cli import UserError, probability, run_main
from common.masking import GEOMETRIC_P, MAX_SPAN_WORDS, choose_spans, word_spans, word_start_table
from common.paths import DATA_DIR
from common.prep import (add_review_text_args, check_output, data_parser, load_store_vocab, packed_reviews,
                         pretraining_review_ids, store_sources, tokenized_articles)
from common.token_store import StoreWriter, TokenStore
from common.vocab import CLS_ID, SEP_ID

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
