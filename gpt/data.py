"""Turn data/kowiki.json into GPT's pretraining data: one flat uint16 token array.

Each article becomes [BOS] tokens [EOS]; the articles are concatenated and the
loader cuts windows of n_seq + 1 tokens (inputs and their next-token targets),
as nanoGPT does. Reading back is a np.memmap: memory does not grow with the corpus.

`--extra ../data/ratings_train.json` puts the NSMC train split's reviews in front
of the articles, each as [BOS] review [EOS] (the form fine-tuning reads): task-
adaptive pretraining. In front, so that the held-out tail stays Wikipedia text
and the held-out loss of kowiki and kowiki + reviews runs can be compared;
`--input none` keeps the reviews alone (held-out: the last reviews).
"""
from __future__ import annotations

import numpy as np

from common.cli import DATA_DIR, UserError, run_main
from common.prep import (add_review_text_args, check_output, data_parser, load_store_vocab, pretraining_review_ids,
                         store_sources, tokenized_articles)
from common.token_store import StoreWriter
from common.vocab import BOS_ID, EOS_ID

DEFAULT_OUTPUT = DATA_DIR / "kowiki_gpt"


def build(input_path: str, output: str, n_seq: int, vocab_path: str, workers: int,
          extra: str | None = None, test_path: str = "") -> dict:
    vocab = load_store_vocab(vocab_path)
    reviews = pretraining_review_ids(vocab, input_path, extra, test_path)
    n_articles = n_tokens = 0
    with StoreWriter(output, {"format": "gpt", "n_seq": n_seq, "vocab_fingerprint": vocab.fingerprint,
                              "vocab_size": len(vocab), **store_sources(input_path, extra)}) as store:
        buffer: list[np.ndarray] = []
        n_reviews = 0
        for ids in reviews:
            buffer.append(np.asarray([BOS_ID, *ids, EOS_ID], dtype=np.uint16))
            n_reviews += 1
            n_tokens += len(ids) + 2
        n_review_tokens = n_tokens
        articles = tokenized_articles(input_path, vocab_path, workers) if input_path != "none" else []
        for paragraphs in articles:
            ids = [t for p in paragraphs for t in p]
            if not ids:
                continue
            buffer.append(np.asarray([BOS_ID, *ids, EOS_ID], dtype=np.uint16))
            n_articles += 1
            n_tokens += len(ids) + 2
            if len(buffer) >= 1024:
                store.append("tokens", np.concatenate(buffer))
                buffer.clear()
        if buffer:
            store.append("tokens", np.concatenate(buffer))
        if n_tokens <= n_seq:
            raise UserError(f"{input_path} yields {n_tokens} tokens: not one window of --n_seq {n_seq} (use a bigger corpus)")
        store.meta.update(n_articles=n_articles, n_reviews=n_reviews, n_review_tokens=n_review_tokens,
                          n_tokens=n_tokens)
    share = f" ({n_reviews:,} reviews: {n_review_tokens / n_tokens:.1%} of the tokens)" if extra else ""
    print(f"wrote {output}: {n_articles:,} articles, {n_tokens:,} tokens{share}, "
          f"{(n_tokens - 1) // n_seq:,} windows of {n_seq}")
    return store.meta


def main() -> None:
    parser = data_parser(__doc__.splitlines()[0], DEFAULT_OUTPUT, n_seq=256)
    add_review_text_args(parser)
    args = parser.parse_args()
    run_main(lambda: check_output(args.output, args.force, args.n_seq, extra=store_sources(args.input, args.extra)["extra"])
             and build(args.input, args.output, args.n_seq, args.vocab, args.workers, args.extra, args.test))


if __name__ == "__main__":
    main()
