"""Train the project's SentencePiece BPE vocab from kowiki.json.

    python vocab/build.py                        # data/kowiki.json -> vocab/kowiki.model + .vocab
    python vocab/build.py --measure data/download/ratings_train.txt   # [UNK] rate of vocab/kowiki.model

The articles are streamed; their paragraphs are split into sentences, passed
through `common.vocab.normalize_text` (the project's one normalization) and a
uniform sample of `--sample_size` sentences is kept (reservoir sampling, seeded),
so time and memory are bounded whatever the corpus size (the 200 MB real slice:
40 s, 1.2 GB). SentencePiece's own normalizer is off ("identity"): every script
encodes through common.vocab.Vocab.encode, which applies the same normalize_text.

What the model holds (vocab/README.md has the measurements behind the defaults):
  ids 0-6    [PAD] [UNK] [BOS] [EOS] [SEP] [CLS] [MASK]  (common.vocab)
  ids 7-262  the 256 byte pieces <0x00>..<0xFF> (byte fallback: a character
             outside the vocab becomes its UTF-8 bytes, never [UNK])
  ids 263-   --vocab_size learned pieces: single characters, always including
             the Hangul compatibility jamo ㄱ-ㅣ (ㅋ, ㅠ) and the 2,350 KS X 1001
             Hangul syllables (--required_chars), then BPE merges
so the default model has 8000 + 7 + 256 = 8263 entries. On a corpus too small
for --vocab_size pieces training stops early and the model is smaller
(hard_vocab_limit off); the build prints a note saying so.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import sentencepiece as spm

from common.cli import (KOWIKI_JSON, VOCAB_DIR, UserError, make_parser, positive_int, rel, require_file,
                        require_output_dir, run_main)
from common.corpus import iter_kowiki_json
from common.io import atomic_open, atomic_path
from common.nsmc import read_nsmc_tsv
from common.vocab import BOS, CLS, EOS, MASK, PAD, SEP, SPECIAL_PIECES, UNK, Vocab, normalize_text

DEFAULT_PREFIX = VOCAB_DIR / "kowiki"
DEFAULT_SAMPLE_SIZE = 1_000_000
DEFAULT_SEED = 1234
N_BYTE_PIECES = 256

# Hangul compatibility jamo ㄱ..ㅣ (U+3131-U+3163): typed alone in reviews (ㅋㅋ, ㅠㅠ, ㄷㄷ).
COMPAT_JAMO = "".join(chr(c) for c in range(0x3131, 0x3164))
# The 2,350 precomposed Hangul syllables of KS X 1001 (those EUC-KR encodes in two
# bytes): the common modern syllables. Trained on Wikipedia alone, a vocab misses
# hundreds of them that reviews use all the time (밌 of 재밌다, 걍, 뭘, 왠, 찝찝 ...).
KSX1001_HANGUL = "".join(chr(c) for c in range(0xAC00, 0xD7A4) if len(chr(c).encode("euc_kr")) == 2)
REQUIRED_CHAR_SETS = {"jamo+ksx1001": COMPAT_JAMO + KSX1001_HANGUL, "jamo": COMPAT_JAMO, "none": ""}
REQUIRED_CHARS = REQUIRED_CHAR_SETS["jamo+ksx1001"]

# SentencePiece skips training lines longer than this (bytes); longer sentences are cut.
MAX_SENTENCE_BYTES = 4192
# A sentence ends at . ! ? followed by whitespace (good enough to make training lines).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

BUILD_INPUT_HINT = "create it with: python data/kowiki.py, or pass --input PATH"


# --- sentences ------------------------------------------------------------------------

def iter_sentences(articles: Iterable[dict]) -> Iterator[str]:
    """Normalized sentences of the articles' paragraphs (empty ones dropped)."""
    for article in articles:
        for paragraph in article["text"]:
            for sentence in _SENTENCE_END.split(normalize_text(paragraph)):
                if sentence:
                    yield _cut_utf8(sentence, MAX_SENTENCE_BYTES)


def _cut_utf8(text: str, max_bytes: int) -> str:
    if len(text) * 4 <= max_bytes:
        return text
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore").strip()


def reservoir_sample(items: Iterable[str], k: int, seed: int = DEFAULT_SEED) -> tuple[list[str], int]:
    """A uniform sample of k items (all of them if fewer, in order) and the number seen."""
    rng = random.Random(seed)
    sample: list[str] = []
    n = 0
    for n, item in enumerate(items, 1):
        if len(sample) < k:
            sample.append(item)
        else:
            j = rng.randrange(n)
            if j < k:
                sample[j] = item
    return sample, n


# --- training -------------------------------------------------------------------------

class SpmSettings(NamedTuple):
    """How SentencePiece trains the vocab; the defaults are the CLI's. `vocab_size` counts learned
    pieces only; `seed` seeds the sentence sample and SentencePiece's own generator.
    (A NamedTuple, not a dataclass: tests and bench/ load this script by path, outside sys.modules.)"""

    vocab_size: int = 8000
    character_coverage: float = 0.9995
    byte_fallback: bool = True
    required_chars: str = REQUIRED_CHARS
    normalization: str = "identity"
    threads: int = 2  # fixed, not os.cpu_count(): the model records it (see --threads)
    seed: int = DEFAULT_SEED

    def trainer_options(self) -> dict:
        """SentencePieceTrainer's options (its vocab_size counts the special and byte pieces too)."""
        options = dict(
            model_type="bpe",
            vocab_size=expected_size(self.vocab_size, self.byte_fallback),
            character_coverage=self.character_coverage,
            byte_fallback=self.byte_fallback,
            normalization_rule_name=self.normalization,
            pad_id=0, unk_id=1, bos_id=2, eos_id=3,
            pad_piece=PAD, unk_piece=UNK, bos_piece=BOS, eos_piece=EOS,
            user_defined_symbols=[SEP, CLS, MASK],  # ids 4, 5, 6
            hard_vocab_limit=False,  # a small corpus gives a smaller vocab instead of an error
            input_sentence_size=0,  # the sample is drawn before training (reservoir_sample)
            max_sentence_length=MAX_SENTENCE_BYTES,
            num_threads=self.threads,
            minloglevel=2,
        )
        if self.required_chars:
            options["required_chars"] = self.required_chars
        return options


def train_from_sentences(sentences: list[str], prefix: str | os.PathLike,
                         settings: SpmSettings = SpmSettings()) -> Path:
    """Train on `sentences`; write PREFIX.model and PREFIX.vocab atomically; return the .model path.

    The sentences are streamed to SentencePiece and the model comes back in
    memory (no temporary paths end up inside the model, so the same sample and
    settings give the same bytes and the same Vocab.fingerprint). Each file is
    written under a temporary name beside its target and renamed onto it; the
    model is validated with common.vocab.Vocab first, so a failed or interrupted
    build leaves an existing vocab untouched.
    """
    prefix = Path(prefix)
    require_output_dir(prefix)
    if not sentences:
        raise UserError("no training text: the input has no paragraphs (check --input)")
    options = settings.trainer_options()
    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(settings.seed)
    model_bytes = io.BytesIO()
    try:
        spm.SentencePieceTrainer.Train(sentence_iterator=iter(sentences), model_writer=model_bytes, **options)
    except RuntimeError as e:
        raise _training_error(str(e), settings) from None
    model_path, vocab_path = Path(f"{prefix}.model"), Path(f"{prefix}.vocab")
    with atomic_path(model_path) as tmp_model:
        tmp_model.write_bytes(model_bytes.getvalue())
        vocab = Vocab(tmp_model)  # validate before replacing anything
        with atomic_open(vocab_path) as f:  # the human-readable list: piece<TAB>score, one per id
            for i in range(len(vocab)):
                f.write(f"{vocab.sp.IdToPiece(i)}\t{vocab.sp.GetScore(i):g}\n")
    return model_path


def _training_error(message: str, settings: SpmSettings) -> UserError:
    """A one-line UserError for a SentencePiece training failure."""
    too_many = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if too_many:
        # SentencePiece counts the special and byte pieces too; convert to learned pieces.
        needed = settings.vocab_size + int(too_many[2]) - int(too_many[1])
        return UserError(
            f"--vocab_size {settings.vocab_size} is too small for the {needed:,} single characters the vocab "
            f"must hold (--character_coverage {settings.character_coverage} of the sample plus --required_chars): "
            f"pass a --vocab_size above {needed:,}, a lower --character_coverage, or --required_chars jamo"
        )
    reason = message.strip().splitlines()[-1] if message.strip() else "unknown error"
    return UserError(f"SentencePiece training failed: {reason}")


def expected_size(vocab_size: int, byte_fallback: bool = True) -> int:
    """Entries of a model built with --vocab_size (when the corpus is large enough)."""
    return vocab_size + len(SPECIAL_PIECES) + (N_BYTE_PIECES if byte_fallback else 0)


def train(input_path: str | os.PathLike = KOWIKI_JSON, prefix: str | os.PathLike = DEFAULT_PREFIX,
          settings: SpmSettings = SpmSettings(), sample_size: int = DEFAULT_SAMPLE_SIZE,
          log: Callable[[str], None] = print) -> Path:
    """Build the vocab from a kowiki.json file; return the path of the .model."""
    input_path = require_file(input_path, "kowiki JSON", BUILD_INPUT_HINT)
    require_output_dir(prefix)
    t0 = time.time()
    sample, seen = reservoir_sample(iter_sentences(iter_kowiki_json(input_path)), sample_size, settings.seed)
    log(f"read {seen:,} sentences from {rel(input_path)}, training on {len(sample):,} ({time.time() - t0:.0f}s)")
    t1 = time.time()
    model = train_from_sentences(sample, prefix, settings)
    vocab = Vocab(model)
    log(f"wrote {rel(model)} ({len(vocab):,} entries, fingerprint {vocab.fingerprint}) "
        f"in {time.time() - t1:.0f}s training, {time.time() - t0:.0f}s in all")
    expected = expected_size(settings.vocab_size, settings.byte_fallback)
    if len(vocab) < expected:
        log(f"note: the corpus gave only {len(vocab):,} of the {expected:,} entries asked for "
            f"(too little text for --vocab_size {settings.vocab_size}; pass a smaller one to silence this)")
    return model


# --- measuring ------------------------------------------------------------------------

def read_documents(path: str | os.PathLike, limit: int | None = None) -> list[str]:
    """The non-empty reviews of an NSMC TSV (ratings_train.txt / ratings_test.txt)."""
    rows, _ = read_nsmc_tsv(path)
    docs = [row["document"] for row in rows]
    return docs[:limit] if limit is not None else docs


def measure(model: str | os.PathLike, documents: list[str]) -> dict:
    """[UNK] and byte-piece rates (shares of all pieces) of a vocab on the documents.

    Documents are encoded as every script encodes them: Vocab.encode_batch,
    i.e. after normalize_text.
    """
    vocab = Vocab(model)
    pieces = [i for ids in vocab.encode_batch(documents) for i in ids]
    return {
        "documents": len(documents),
        "pieces": len(pieces),
        "unk_rate": pieces.count(vocab.sp.unk_id()) / max(len(pieces), 1),
        "byte_rate": sum(map(vocab.sp.IsByte, pieces)) / max(len(pieces), 1),
        "pieces_per_document": len(pieces) / max(len(documents), 1),
        "vocab_entries": len(vocab),
    }


def format_measure(model: str | os.PathLike, m: dict) -> str:
    return (f"{rel(Path(model))}: {m['documents']:,} reviews, {m['pieces']:,} pieces, "
            f"[UNK] {100 * m['unk_rate']:.3f}% of pieces, byte pieces {100 * m['byte_rate']:.3f}%, "
            f"{m['pieces_per_document']:.2f} pieces/review ({m['vocab_entries']:,} entries)")


# --- CLI ------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = make_parser(__doc__.split("\n\n")[0])
    defaults = SpmSettings()
    p.add_argument("--input", type=Path, default=KOWIKI_JSON, help="kowiki.json: one JSON article per line")
    p.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX,
                   help="output prefix: writes PREFIX.model and PREFIX.vocab")
    p.add_argument("--vocab_size", type=positive_int, default=defaults.vocab_size,
                   help="learned pieces (characters + BPE merges); the 7 special pieces and, with "
                        "byte fallback, the 256 byte pieces come on top")
    p.add_argument("--sample_size", type=positive_int, default=DEFAULT_SAMPLE_SIZE,
                   help="sentences sampled uniformly from the corpus for training (bounds time and memory)")
    p.add_argument("--character_coverage", type=float, default=defaults.character_coverage,
                   help="share of the sample's characters that must be single pieces; "
                        "the rarest rest become byte pieces (or [UNK] with --no_byte_fallback)")
    p.add_argument("--required_chars", choices=sorted(REQUIRED_CHAR_SETS), default="jamo+ksx1001",
                   help="characters always in the vocab, whatever their count in the sample: jamo = the "
                        "Hangul compatibility jamo ㄱ-ㅣ (U+3131-U+3163); ksx1001 = the 2,350 KS X 1001 "
                        "Hangul syllables")
    p.add_argument("--no_byte_fallback", action="store_true",
                   help="characters outside the vocab become [UNK] instead of UTF-8 byte pieces")
    p.add_argument("--spm_normalization", choices=["identity", "nmt_nfkc"], default="identity",
                   help="SentencePiece's built-in normalizer; the project uses identity (text goes through "
                        "common.vocab.normalize_text); nmt_nfkc only to reproduce vocab/README.md's comparison")
    p.add_argument("--threads", type=positive_int, default=defaults.threads,
                   help="SentencePiece training threads (recorded in the model: another value gives "
                        "the same pieces but another fingerprint)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the sentence sample")
    p.add_argument("--measure", type=Path, metavar="NSMC_TSV",
                   help="do not train: print the [UNK] rate of the vocab PREFIX.model on the reviews of this "
                        "NSMC TSV (e.g. $CORPUS_DIR/nsmc/ratings_train.txt)")
    p.add_argument("--measure_limit", type=positive_int, default=None,
                   help="with --measure: only the first N reviews (None: all of them)")
    args = p.parse_args(argv)
    if not 0.0 < args.character_coverage <= 1.0:
        p.error(f"--character_coverage must be in (0, 1], got {args.character_coverage}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.measure is not None:
        model = Path(f"{args.prefix}.model")
        docs = read_documents(args.measure, args.measure_limit)
        print(format_measure(model, measure(model, docs)))
        return
    settings = SpmSettings(
        vocab_size=args.vocab_size, character_coverage=args.character_coverage,
        byte_fallback=not args.no_byte_fallback, required_chars=REQUIRED_CHAR_SETS[args.required_chars],
        normalization=args.spm_normalization, threads=args.threads, seed=args.seed,
    )
    train(args.input, args.prefix, settings, sample_size=args.sample_size)


if __name__ == "__main__":
    run_main(main)
