"""Pretrain SpanBERT with span masking, MLM + SBO, on kowiki (run `python data.py` first)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.encoder_data import MaskedSegmentDataset, init_vocab_heads
from common.masking import mask_spans, max_span_masked
from common.pretrain import PretrainSpec, pretrain_main
from spanbert.data import DEFAULT_OUTPUT
from spanbert.model import SpanBertForPreTraining


class PretrainingDataset(MaskedSegmentDataset):
    """Segments [CLS] tokens [SEP] of the store, span-masked anew at every `collate`."""

    format = "spanbert"
    max_masked = staticmethod(max_span_masked)

    def collate(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        rng = rng or self.batch_rng(indices)
        masks = [mask_spans(self.instance(i), self.word_starts, self.mask_prob, rng, self.n_vocab) for i in indices]
        input_ids, attention_mask = self.pad([m.input_ids for m in masks])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask.astype(np.int64),
                 "mlm_positions": self.pad_slots([m.positions for m in masks]),
                 "mlm_labels": self.pad_slots([m.labels for m in masks])}  # 0 = [PAD]: unused, skipped by the losses
        for name in ("span_left", "span_right", "span_offset"):
            batch[name] = self.pad_slots([getattr(m, name) for m in masks])
        return {k: torch.from_numpy(v) for k, v in batch.items()}


SPEC = PretrainSpec(
    name="spanbert", folder=Path(__file__).resolve().parent, default_input=DEFAULT_OUTPUT,
    build_model=SpanBertForPreTraining, open_dataset=PretrainingDataset, init_from_data=init_vocab_heads,
)

if __name__ == "__main__":
    pretrain_main(SPEC)
