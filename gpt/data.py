"""Turn data/kowiki.json into GPT's pretraining data: one flat uint16 token array.

Each article becomes [BOS] tokens [EOS]; the articles are concatenated and the
loader cuts windows of n_seq + 1 tokens (inputs and their next-token targets),
as nanoGPT does. Reading back is a np.memmap: memory does not grow with the corpus.
"""
from __future__ import annotations

import numpy as np

from common.cli import UserError, run_main
from common.paths import DATA_DIR
from common.prep import check_output, data_parser, tokenized_articles
from common.token_store import StoreWriter
from common.vocab import BOS_ID, EOS_ID, load_vocab

DEFAULT_OUTPUT = DATA_DIR / "kowiki_gpt"


def build(input_path: str, output: str, n_seq: int, vocab_path: str, workers: int) -> dict:
    vocab = load_vocab(vocab_path)
    if len(vocab) > np.iinfo(np.uint16).max:
        raise UserError(f"{vocab_path} has {len(vocab)} pieces: more than uint16 holds (use a vocab under 65,536)")
    n_articles = n_tokens = 0
    with StoreWriter(output, {"format": "gpt", "n_seq": n_seq, "vocab_fingerprint": vocab.fingerprint,
                              "vocab_size": len(vocab)}) as store:
        buffer: list[np.ndarray] = []
        for paragraphs in tokenized_articles(input_path, vocab_path, workers):
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
        store.meta.update(n_articles=n_articles, n_tokens=n_tokens)
    print(f"wrote {output}: {n_articles:,} articles, {n_tokens:,} tokens, {(n_tokens - 1) // n_seq:,} windows of {n_seq}")
    return store.meta


def main() -> None:
    parser = data_parser(__doc__.splitlines()[0], DEFAULT_OUTPUT, n_seq=256)
    args = parser.parse_args()
    run_main(lambda: check_output(args.output, args.force, args.n_seq)
             and build(args.input, args.output, args.n_seq, args.vocab, args.workers))


if __name__ == "__main__":
    main()
