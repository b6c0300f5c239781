"""The pretraining data of the two encoders: variable-length instances of a token
store (`tokens` + `offsets` + `word_starts`), masked anew at every batch (dynamic
masking, with `common.masking`) and padded into the tensors the models take."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from common.cli import UserError
from common.layers import LMHead
from common.masking import N_SPECIAL
from common.token_store import token_counts


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
    each epoch sees new masks. Subclasses set `format` and `max_masked` (their
    masking's bound, `common.masking`) and write `collate`.

    Every batch has the same shapes: (B, n_seq) tokens, padded, and (B, slots)
    masked slots, `slots` the most the masking can choose in n_seq tokens, the
    unused ones [PAD]. A compiled step is then one graph for the whole run, not one
    per masked count (padding costs little: a batch's longest instance is nearly
    always n_seq long, and the heads score B x slots rows, not B x n_seq).
    """

    format = ""
    max_masked: Callable[[int, float], int]

    def __init__(self, store: Any, cfg: Any):
        if store.meta.get("format") != self.format:
            raise UserError(f"{store.path} is not {self.format} pretraining data (format {store.meta.get('format')!r}); "
                            f"build it with python data.py in {self.format}/")
        self.n_seq = store.check_n_seq(cfg.n_seq)
        self.tokens, self.offsets = store["tokens"], store["offsets"]
        self.word_starts = np.asarray(store["word_starts"], dtype=bool)
        self.mask_prob = float(store.meta["mask_prob"])
        self.n_vocab = cfg.n_vocab
        self.slots = self.max_masked(self.n_seq, self.mask_prob)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def instance(self, i: int) -> np.ndarray:
        """Token ids of instance i, special tokens included."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]].astype(np.int64)

    @staticmethod
    def batch_rng(indices: np.ndarray) -> np.random.Generator:
        """The generator a batch's masks are drawn from (see the class docstring)."""
        draw = int(torch.randint(0, 2**62, (1,)))
        return np.random.default_rng([draw, *np.asarray(indices, dtype=np.int64).tolist()])

    def pad(self, rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask): the rows right-padded with [PAD] = 0 to n_seq, and True at the real tokens."""
        input_ids = pack(rows, width=self.n_seq)
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        return input_ids, np.arange(input_ids.shape[1]) < lengths[:, None]

    def pad_slots(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """Per-instance masked-slot values (positions, labels, ...) -> (B, slots), [PAD] = 0 where unused."""
        return pack(rows, width=self.slots)


def init_vocab_heads(model: nn.Module, train_set: Any) -> None:
    """Start the bias of every vocab head of an encoder (BERT's MLM; SpanBERT's MLM and SBO) at the log
    unigram distribution of what they predict: the tokens of the training instances (`train_set`, a
    `common.pretrain.Subset` of a `MaskedSegmentDataset`; the held-out tail is not counted), special
    tokens left out (never masked, so never a target). At bias 0 the only way to predict the unigram
    distribution, the first thing a masked LM learns, is a hidden state pointing the same way at every
    position: the encoder drifts towards collapse (`common.diagnose`); see `common.layers.LMHead`."""
    data: MaskedSegmentDataset = train_set.dataset
    end = int(data.offsets[int(train_set.indices.max()) + 1])
    counts = token_counts(data.tokens[:end], data.n_vocab)
    counts[:N_SPECIAL] = 0
    for head in (m for m in model.modules() if isinstance(m, LMHead)):
        head.init_bias_to_log_prior(counts)
