"""SpanBERT (Joshi et al., 2020): BERT's encoder pretrained with span masking and
the Span Boundary Objective (SBO), on single contiguous segments (no NSP).

Every masked token x_i of a span (x_s, ..., x_e) is predicted twice:
- MLM, from its own output encoding (BERT's head, tied to the token embedding);
- SBO, from the encodings of the two boundary tokens just outside the span and a
  relative position embedding of its place in the span:
      h0  = [x_{s-1}; x_{e+1}; p_{i-s+1}]
      h1  = LayerNorm(GELU(W1 h0))
      y_i = LayerNorm(GELU(W2 h1))
  then y_i is scored against the (tied) token embedding.
The pretraining loss is L_MLM + L_SBO, both averaged over the masked tokens.

Names follow the paper (span boundary, offset) and Hugging Face's BERT classes;
the trunk is bert/model.py's `BertModel`, named `trunk` so that fine-tuning loads
it with `common.checkpoint.module_state`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from bert.model import BertModel, MLMHead, masked_lm_loss
from common.config import ModelConfig
from common.layers import LMHead, init_weights, masked_max, masked_mean
from common.losses import IGNORE, Metrics, classification_loss
from common.vocab import PAD_ID
from spanbert.data import MAX_SPAN_WORDS

# Spans are drawn in whole words, at most MAX_SPAN_WORDS of them (the paper's clip),
# but a word is one or more SentencePiece pieces, so offsets inside a span are
# counted in tokens and the SBO position table is sized by the clip times pieces
# per word. Korean words take ~2-2.5 pieces on average; 4 per word leaves only
# the tail of rare spans of very long words past the table (~0.2% of the masked
# tokens on a kowiki extract): those stay MLM targets only, as the authors' code
# also caps its pair targets (max_pair_targets).
SBO_MAX_TARGETS = 4 * MAX_SPAN_WORDS

LOGIT_CHOICES = ("cls", "mean", "max")


class SpanBoundaryHead(LMHead):
    """The SBO head: boundary encodings + relative position -> 2-layer MLP -> LMHead's tied vocab
    projection + bias (no transform: the MLP's output y_i is scored as it is)."""

    def __init__(self, cfg: ModelConfig, token_embedding: nn.Embedding, max_targets: int = SBO_MAX_TARGETS):
        super().__init__(cfg, token_embedding, transform=False)
        D, eps = cfg.d_hidn, cfg.layer_norm_epsilon
        self.max_targets = max_targets
        self.position_embeddings = nn.Embedding(max_targets, D)  # p_1 .. p_max (index = offset in the span)
        self.mlp = nn.Sequential(  # the paper's f: two (Linear, GELU, LayerNorm) layers
            nn.Linear(3 * D, D), nn.GELU(), nn.LayerNorm(D, eps=eps),
            nn.Linear(D, D), nn.GELU(), nn.LayerNorm(D, eps=eps),
        )
        self.position_embeddings.apply(init_weights)
        self.mlp.apply(init_weights)

    def encode(self, left: Tensor, right: Tensor, offset: Tensor) -> Tensor:
        """The paper's y_i: left, right (N, D) boundary encodings; offset (N,) in [0, max_targets) -> (N, D)."""
        return self.mlp(torch.cat([left, right, self.position_embeddings(offset)], dim=-1))

    def forward(self, left: Tensor, right: Tensor, offset: Tensor) -> Tensor:
        """-> (N, n_vocab) logits; see `encode`."""
        return super().forward(self.encode(left, right, offset))


def span_boundary_loss(head: SpanBoundaryHead, hidden: Tensor, labels: Tensor, span_left: Tensor,
                       span_right: Tensor, span_offset: Tensor) -> tuple[Tensor, Metrics]:
    """Cross-entropy of the SBO predictions of the masked tokens.

    hidden (B, T, D); labels (B, M) the original ids of the masked tokens, PAD where a
    row has fewer than M; span_left / span_right (B, M) positions of the boundary
    tokens of each masked token's span; span_offset (B, M) its offset in the span
    (0 = first token). Tokens deeper than the position table (offset >= max_targets,
    only in spans of long words) are MLM targets only, as in the authors' code.
    """
    scored = (labels != PAD_ID) & (span_offset < head.max_targets)
    rows = torch.arange(hidden.size(0), device=hidden.device)[:, None]
    offset = span_offset.clamp(max=head.max_targets - 1)  # any row of the table where not scored
    y_i = head.encode(hidden[rows, span_left], hidden[rows, span_right], offset)  # (B, M, D)
    targets = labels.masked_fill(~scored, IGNORE)  # static shapes, as the MLM loss
    return head.loss(y_i.flatten(0, 1), targets.flatten(), "sbo")  # chunked, as the MLM loss


class SpanBertForPreTraining(nn.Module):
    """Trunk + MLM head + SBO head, both tied to the token embedding; loss = MLM + SBO."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = BertModel(cfg)
        self.mlm_head = MLMHead(cfg, self.trunk.token_embedding)
        self.sbo_head = SpanBoundaryHead(cfg, self.trunk.token_embedding)
        # No NSP: nothing here trains the pooler, so it is frozen (DDP requires every
        # trained parameter to get a gradient) and fine-tuning trains it from its init.
        self.trunk.pooler.requires_grad_(False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, mlm_positions: Tensor, mlm_labels: Tensor,
                span_left: Tensor, span_right: Tensor, span_offset: Tensor) -> tuple[Tensor, Metrics]:
        """input_ids, attention_mask (B, T), input_ids with the spans replaced; mlm_positions,
        mlm_labels (B, M) with labels 0 ([PAD]) in unused slots; span_* (B, M), see `span_boundary_loss`.
        One segment: token_type_ids are 0."""
        hidden = self.trunk.encoder(input_ids, attention_mask)  # the pooler is not needed
        mlm, metrics = masked_lm_loss(self.mlm_head, hidden, mlm_positions, mlm_labels, name="mlm")
        sbo, sbo_metrics = span_boundary_loss(self.sbo_head, hidden, mlm_labels, span_left, span_right, span_offset)
        loss = mlm + sbo
        metrics.update(sbo_metrics)
        n = metrics["mlm_loss"][1]
        metrics["loss"] = (loss.detach() * n, n)  # weighted by the masked tokens, like its two parts
        return loss, metrics


class SpanBertForSequenceClassification(nn.Module):
    """Trunk + a linear classifier on one vector per review, chosen by `logit`:

    cls  - the pooled [CLS] state (dense + tanh, BERT's pooler);
    mean - the mean of the real tokens' output states (padding excluded);
    max  - their element-wise max (padding excluded).
    """

    def __init__(self, cfg: ModelConfig, n_labels: int = 2, logit: str = "cls"):
        super().__init__()
        if logit not in LOGIT_CHOICES:
            raise ValueError(f"logit must be one of {LOGIT_CHOICES}, got {logit!r}")
        self.cfg, self.logit = cfg, logit
        self.trunk = BertModel(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.d_hidn, n_labels)
        self.classifier.apply(init_weights)
        if logit != "cls":  # mean / max never use the pooler: frozen, as DDP needs every trained parameter used
            self.trunk.pooler.requires_grad_(False)

    def classify(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """-> (class logits (B, n_labels), hidden states (B, T, D))."""
        hidden, pooled = self.trunk(input_ids, attention_mask)
        if self.logit == "cls":
            features = pooled
        elif self.logit == "mean":
            features = masked_mean(hidden, attention_mask)
        else:
            features = masked_max(hidden, attention_mask)
        return self.classifier(self.dropout(features)), hidden

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> tuple[Tensor, Metrics]:
        return classification_loss(self.classify(input_ids, attention_mask)[0], labels, "")
