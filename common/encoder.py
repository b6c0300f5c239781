"""The bidirectional encoder shared by BERT and SpanBERT (Devlin et al., 2019;
Joshi et al., 2020): token + position + segment embeddings with LayerNorm,
post-LN layers, and the pooler (dense + tanh on the [CLS] state).

Names follow Hugging Face's `modeling_bert.py` where they have an equivalent
(`attention_mask`, `token_type_ids`, `pooler`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from common.config import ModelConfig
from common.layers import LMHead, Transformer, init_weights
from common.losses import IGNORE, Metrics
from common.vocab import CLS_ID, PAD_ID, SEP_ID


def wrap_cls_sep(ids: list[int], n_seq: int) -> list[int]:
    """[CLS] text [SEP], the text cut so the whole fits n_seq (one segment: token_type_ids 0).
    How BERT and SpanBERT present a review for classification."""
    return [CLS_ID, *ids[: n_seq - 2], SEP_ID]


class BertModel(nn.Module):
    """Encoder + pooler. forward -> (sequence output (B, T, D), pooled [CLS] (B, D))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Transformer(cfg, causal=False, embedding_layer_norm=True)
        self.pooler = nn.Sequential(nn.Linear(cfg.d_hidn, cfg.d_hidn), nn.Tanh())
        self.pooler.apply(init_weights)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.encoder.embeddings.token

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return hidden, self.pooler(hidden[:, 0])


class MLMHead(LMHead):
    """BERT's MLM head: dense + GELU + LayerNorm, then the tied token embedding + a bias."""

    def __init__(self, cfg: ModelConfig, token_embedding: nn.Embedding):
        super().__init__(cfg, token_embedding, transform=True)


def masked_lm_loss(head: LMHead, hidden: Tensor, positions: Tensor, labels: Tensor,
                   name: str = "mlm") -> tuple[Tensor, Metrics]:
    """Cross-entropy at the masked positions only.

    hidden (B, T, D); positions (B, M) indices into T; labels (B, M) the original
    token ids, [PAD] where a row has fewer than M masked tokens. Only the B x M
    masked slots are projected onto the vocab, in chunks (`LMHead.loss`); the unused
    ones are scored IGNORE rather than dropped, so the shapes do not depend on the
    data (no graph break or recompile under torch.compile).
    """
    rows = torch.arange(hidden.size(0), device=hidden.device)[:, None]
    targets = labels.masked_fill(labels == PAD_ID, IGNORE)
    return head.loss(hidden[rows, positions].flatten(0, 1), targets.flatten(), name)
