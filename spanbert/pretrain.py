"""Pretrain SpanBERT with span masking, MLM + SBO, on kowiki (run `python data.py` first)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.cli import UserError
from common.config import ModelConfig
from common.masking import pack
from common.pretrain import PretrainSpec, pretrain_main
from common.token_store import TokenStore
from spanbert.data import DEFAULT_OUTPUT, mask_spans
from spanbert.model import SpanBertForPreTraining


class PretrainingDataset:
    """Segments of the store, span-masked anew at every `collate` (dynamic masking, as BERT's).

    The masks of a batch come from a generator seeded by one draw of torch's
    global RNG plus the batch's indices: the trainer checkpoints that RNG, so a
    resumed run draws exactly the masks the uninterrupted run would have, while
    each epoch sees new masks.
    """

    def __init__(self, store: TokenStore, cfg: ModelConfig):
        if store.meta.get("format") != "spanbert":
            raise UserError(f"{store.path} is not SpanBERT pretraining data (format {store.meta.get('format')!r}); "
                            f"build it with python data.py in spanbert/")
        self.n_seq = int(store.meta["n_seq"])
        if self.n_seq > cfg.n_seq:
            raise UserError(f"{store.path} was built with --n_seq {self.n_seq} but the config allows {cfg.n_seq} "
                            f"(rebuild with python data.py --n_seq {cfg.n_seq} --force, or use a config with a larger n_seq)")
        self.tokens, self.offsets = store["tokens"], store["offsets"]
        self.word_starts = np.asarray(store["word_starts"], dtype=bool)
        self.mask_prob = float(store.meta["mask_prob"])
        self.n_vocab = cfg.n_vocab

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def instance(self, i: int) -> np.ndarray:
        """Token ids of instance i: [CLS] tokens [SEP]."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]].astype(np.int64)

    def collate(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        if rng is None:
            draw = int(torch.randint(0, 2**62, (1,)))
            rng = np.random.default_rng([draw, *indices.tolist()])
        masks = [mask_spans(self.instance(i), self.word_starts, self.mask_prob, rng, self.n_vocab) for i in indices]
        input_ids = pack([m.input_ids for m in masks])  # right padding with [PAD] = 0
        lengths = np.fromiter((len(m.input_ids) for m in masks), dtype=np.int64, count=len(masks))
        attention_mask = np.arange(input_ids.shape[1]) < lengths[:, None]
        batch = {"input_ids": input_ids, "attention_mask": attention_mask.astype(np.int64),
                 "mlm_positions": pack([m.positions for m in masks]),
                 "mlm_labels": pack([m.labels for m in masks])}  # 0 = [PAD]: an unused slot, skipped by the losses
        for name in ("span_left", "span_right", "span_offset"):
            batch[name] = pack([getattr(m, name) for m in masks])
        return {k: torch.from_numpy(v) for k, v in batch.items()}


def format_metrics(m: dict[str, float]) -> str:
    return (f"loss {m['loss']:.3f} | mlm loss {m['mlm_loss']:.3f} acc {m['mlm_acc']:.3f} | "
            f"sbo loss {m['sbo_loss']:.3f} acc {m['sbo_acc']:.3f}")


SPEC = PretrainSpec(
    name="spanbert", folder=Path(__file__).resolve().parent, default_input=DEFAULT_OUTPUT,
    build_model=SpanBertForPreTraining, open_dataset=PretrainingDataset, format_metrics=format_metrics,
    default_lr=1e-4, default_batch=64, default_epoch=20,
)

if __name__ == "__main__":
    pretrain_main(SPEC)
