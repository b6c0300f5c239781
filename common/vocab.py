"""SentencePiece vocab: fixed special ids, loading, and the one text normalizer.

Every model uses the same special pieces at the same ids, so that a token id
means the same thing in every data file, checkpoint and script.

Normalization happens here and only here (`normalize_text`): the SentencePiece
model is trained with its own normalizer switched off ("identity") on text
that went through `normalize_text`, and every input (Wikipedia, reviews,
prompts) is encoded through `encode`, which applies the same function. NFKC,
SentencePiece's default, would rewrite Hangul compatibility jamo such as
"ㅋ" / "ㅠ" (the bulk of emotive text in movie reviews) into conjoining jamo
that Wikipedia text never contains; NFC keeps them as they are typed.
"""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path

import numpy as np
import sentencepiece as spm

from common.cli import DEFAULT_VOCAB, UserError

PAD_ID, UNK_ID, BOS_ID, EOS_ID, SEP_ID, CLS_ID, MASK_ID = range(7)
PAD, UNK, BOS, EOS, SEP, CLS, MASK = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]", "[CLS]", "[MASK]"
SPECIAL_PIECES = [PAD, UNK, BOS, EOS, SEP, CLS, MASK]
N_SPECIAL = len(SPECIAL_PIECES)  # ids below this are special pieces: never masked, never drawn as random tokens
WORD_MARKER = "\u2581"  # "▁": SentencePiece's marker at the start of a word


BUILD_HINT = "build it with: python vocab/build.py (from the repository root)"

_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """The single text normalization applied to every input.

    NFC (composes Hangul syllables, keeps compatibility jamo like ㅋ/ㅠ),
    whitespace runs collapsed to one space, ends stripped. Case is kept.
    """
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


class Vocab:
    """A loaded SentencePiece model plus the project's conventions."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"vocab not found: {self.path} ({BUILD_HINT})")
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(self.path))
        except (OSError, RuntimeError) as e:
            raise UserError(f"cannot read vocab {self.path}: not a SentencePiece model ({BUILD_HINT})") from e
        for i, piece in enumerate(SPECIAL_PIECES):
            if self.sp.IdToPiece(i) != piece:
                raise UserError(
                    f"vocab {self.path} has {self.sp.IdToPiece(i)!r} at id {i}, expected {piece!r} "
                    f"(it was not built by this project; {BUILD_HINT})"
                )
        self.fingerprint = hashlib.sha256(self.sp.serialized_model_proto()).hexdigest()[:16]

    def __len__(self) -> int:
        return self.sp.GetPieceSize()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (normalized first), without special pieces."""
        return self.sp.EncodeAsIds(normalize_text(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.EncodeAsIds([normalize_text(t) for t in texts])

    def encode_pieces(self, text: str) -> list[str]:
        return self.sp.EncodeAsPieces(normalize_text(text))

    def decode(self, ids: list[int]) -> str:
        return self.sp.DecodeIds([i for i in ids if i >= len(SPECIAL_PIECES)])

    def id_to_piece(self, i: int) -> str:
        return self.sp.IdToPiece(i)

    def word_starts(self) -> "list[bool]":
        """For each id, whether its piece begins a new word (used for whole-word masking).

        Special pieces count as word starts, so they never join a neighbour's word.
        """
        return [i < len(SPECIAL_PIECES) or self.sp.IdToPiece(i).startswith(WORD_MARKER) for i in range(len(self))]


def load_vocab(path: str | os.PathLike = DEFAULT_VOCAB) -> Vocab:
    return Vocab(path)


def word_start_table(vocab: Vocab) -> np.ndarray:
    """(n_vocab,) bool: whether each id begins a word (special pieces count as starts)."""
    return np.asarray(vocab.word_starts(), dtype=bool)
