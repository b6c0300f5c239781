"""BERT (Devlin et al., 2019): a bidirectional Transformer encoder pretrained with
masked language modeling (MLM) and next sentence prediction (NSP), then
fine-tuned with a linear classifier on the pooled [CLS] state.

The trunk is `BertModel` below, SpanBERT's too (embeddings with segments and
LayerNorm, post-LN layers, pooler); the MLM head's output layer is tied to the
token embedding. Names follow Hugging Face's `BertForPreTraining` /
`BertForSequenceClassification`. Training modules return (loss, metrics) from
`forward`, so DDP wraps them whole.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from common.config import ModelConfig
from common.layers import LMHead, Transformer, init_weights
from common.losses import IGNORE, Metrics, classification_loss
from common.vocab import PAD_ID


# --- the encoder BERT and SpanBERT share (Hugging Face's BertModel, modeling_bert.py) --------------------

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


class BertForPreTraining(nn.Module):
    """Trunk + MLM head (tied) + NSP head (Linear(d, 2) on the pooled [CLS]); loss = MLM + NSP."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = BertModel(cfg)
        self.mlm_head = MLMHead(cfg, self.trunk.token_embedding)
        self.nsp_head = nn.Linear(cfg.d_hidn, 2)
        init_weights(self.nsp_head)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor, mlm_positions: Tensor,
                mlm_labels: Tensor, nsp_labels: Tensor) -> tuple[Tensor, Metrics]:
        """input_ids, attention_mask, token_type_ids (B, T); mlm_positions, mlm_labels (B, M)
        with labels 0 ([PAD]) in unused slots; nsp_labels (B,) with 1 = B follows A, IGNORE = no pair.

        Besides the losses and accuracies, `nsp_next` is the share of pairs whose B follows A:
        the NSP accuracy a constant guess gets is max(nsp_next, 1 - nsp_next)."""
        hidden, pooled = self.trunk(input_ids, attention_mask, token_type_ids)
        mlm, metrics = masked_lm_loss(self.mlm_head, hidden, mlm_positions, mlm_labels)
        nsp, nsp_metrics = classification_loss(self.nsp_head(pooled), nsp_labels, "nsp")
        loss = mlm + nsp
        n = nsp_labels.numel()
        pairs = nsp_labels != IGNORE
        return loss, {**metrics, **nsp_metrics, "nsp_next": ((nsp_labels == 1).sum(), pairs.sum()),
                      "loss": (loss.detach() * n, n)}


class BertForSequenceClassification(nn.Module):
    """Trunk + dropout + linear classifier on the pooled [CLS] state."""

    def __init__(self, cfg: ModelConfig, n_labels: int = 2):
        super().__init__()
        self.cfg = cfg
        self.trunk = BertModel(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.d_hidn, n_labels)
        init_weights(self.classifier)

    def classify(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """-> (class logits (B, n_labels), pooled [CLS] (B, D)). One segment: token_type_ids are 0."""
        _, pooled = self.trunk(input_ids, attention_mask)
        return self.classifier(self.dropout(pooled)), pooled

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> tuple[Tensor, Metrics]:
        logits, _ = self.classify(input_ids, attention_mask)
        return classification_loss(logits, labels, "")
