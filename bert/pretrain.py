"""Pretrain BERT with masked LM + next sentence prediction on kowiki (run `python data.py` first)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.config import ModelConfig
from common.encoder_data import MaskedSegmentDataset, init_vocab_heads
from common.losses import IGNORE
from common.masking import mask_whole_words, max_whole_word_masked
from common.pretrain import PretrainSpec, pretrain_main
from common.token_store import TokenStore
from bert.data import DEFAULT_OUTPUT, NO_NSP
from bert.model import BertForPreTraining


class PretrainingDataset(MaskedSegmentDataset):
    """Sentence pairs [CLS] A [SEP] B [SEP] of the store, whole-word masked anew at every `collate`."""

    format = "bert"
    max_masked = staticmethod(max_whole_word_masked)

    def __init__(self, store: TokenStore, cfg: ModelConfig):
        super().__init__(store, cfg)
        self.len_a, self.is_next = store["len_a"], store["is_next"]

    def collate(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        rng = rng or self.batch_rng(indices)
        masked, positions, labels = zip(*(mask_whole_words(self.instance(i), self.word_starts, self.mask_prob, rng,
                                                           self.n_vocab) for i in indices))
        input_ids, attention_mask = self.pad(masked)
        is_next = self.is_next[indices].astype(np.int64)
        t = np.arange(input_ids.shape[1])
        token_type_ids = (t >= self.len_a[indices].astype(np.int64)[:, None]) & attention_mask
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask.astype(np.int64)),
            "token_type_ids": torch.from_numpy(token_type_ids.astype(np.int64)),
            "mlm_positions": torch.from_numpy(self.pad_slots(positions)),
            "mlm_labels": torch.from_numpy(self.pad_slots(labels)),  # 0 = [PAD]: an unused slot, skipped by the loss
            "nsp_labels": torch.from_numpy(np.where(is_next == NO_NSP, IGNORE, is_next)),  # packed reviews: no pair
        }


SPEC = PretrainSpec(
    name="bert", folder=Path(__file__).resolve().parent, default_input=DEFAULT_OUTPUT,
    build_model=BertForPreTraining, open_dataset=PretrainingDataset, init_from_data=init_vocab_heads,
)

if __name__ == "__main__":
    pretrain_main(SPEC)
