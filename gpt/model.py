"""GPT-1 (Radford et al., 2018): a Transformer decoder trained as a language model,
then fine-tuned with a linear classifier on the last real token, optionally
keeping the language-model loss as an auxiliary objective (L3 = L2 + lambda * L1).

The trunk is `common.layers.Transformer` with a causal mask and no LayerNorm on
the embeddings (post-LN layers, learned positions, GELU in the tanh approximation of the
GPT-1 code: the GPT-1 architecture, and Hugging Face's OpenAIGPTModel).
Training modules return (loss, metrics) from `forward`, so DDP wraps them whole.
"""
from __future__ import annotations

from torch import Tensor, nn

from common.config import ModelConfig
from common.layers import KVCache, LMHead, Transformer, last_token
from common.losses import IGNORE, Metrics, classification_loss
from common.vocab import PAD_ID


def lm_loss(lm_head: LMHead, hidden: Tensor, targets: Tensor) -> tuple[Tensor, Metrics]:
    """Next-token cross-entropy over positions whose target is a real token.

    hidden (B, T, D); targets (B, T) holding PAD_ID where there is nothing to predict. Every row is
    scored, the padded ones with an IGNORE target, rather than dropped by a boolean index: the shapes
    do not depend on the data, so a compiled step is one graph with no host sync (the encoders score
    their masked slots the same way). Padding costs LM-head FLOPs only in fine-tuning's --lm, whose
    batches are bucketed by length.
    """
    targets = targets.masked_fill(targets == PAD_ID, IGNORE)
    # chunked: the (B x T, n_vocab) logits are never all in memory
    return lm_head.loss(hidden.flatten(0, 1), targets.flatten())


class GPTLMHeadModel(nn.Module):
    """Trunk + LM head tied to the token embedding: pretraining and generation."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = Transformer(cfg, causal=True, embedding_layer_norm=False, gelu_approximate="tanh")
        self.lm_head = LMHead(cfg, self.trunk.embeddings.token, transform=False)

    def forward(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, Metrics]:
        """input_ids (B, T), labels (B, T) = input_ids shifted left by one."""
        return lm_loss(self.lm_head, self.trunk(input_ids), labels)

    def logits(self, input_ids: Tensor, cache: KVCache | None = None, slots: Tensor | None = None) -> Tensor:
        """(B, T) -> next-token logits (B, T, n_vocab). With `cache`, the tokens go to cache slots `slots` (T,)
        and attend to what the cache holds: only the new positions are computed."""
        return self.lm_head(self.trunk(input_ids, cache=cache, slots=slots))


class GPTForSequenceClassification(nn.Module):
    """Trunk + classifier on the last real token ([EOS]) + optional auxiliary LM loss."""

    def __init__(self, cfg: ModelConfig, n_labels: int = 2, lm_coef: float = 0.0):
        super().__init__()
        if lm_coef < 0:
            raise ValueError(f"lm_coef must be >= 0, got {lm_coef}")
        self.cfg, self.lm_coef = cfg, lm_coef
        self.trunk = Transformer(cfg, causal=True, embedding_layer_norm=False, gelu_approximate="tanh")
        # The LM head exists only when its loss is used: at lambda = 0 its bias would be a trainable
        # parameter without a gradient, which DDP refuses. When it exists, fine-tuning carries over
        # the pretrained one, bias included (see `pretrained_modules`).
        self.lm_head = LMHead(cfg, self.trunk.embeddings.token, transform=False) if lm_coef > 0 else None
        self.pretrained_modules = ("trunk", "lm_head") if lm_coef > 0 else ("trunk",)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.d_hidn, n_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)

    def classify(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """-> (class logits (B, n_labels), hidden states (B, T, D)). Right padding only."""
        hidden = self.trunk(input_ids)  # causal: real positions never see the pads after them
        return self.classifier(self.dropout(last_token(hidden, attention_mask))), hidden

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> tuple[Tensor, Metrics]:
        logits, hidden = self.classify(input_ids, attention_mask)
        loss, metrics = classification_loss(logits, labels)
        if self.lm_head is not None:  # L3 = L2 + lambda * L1; skipped entirely when lambda = 0
            targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, PAD_ID)
            lm, lm_metrics = lm_loss(self.lm_head, hidden[:, :-1], targets)
            loss = loss + self.lm_coef * lm
            metrics["lm_loss"] = lm_metrics["loss"]
        return loss, metrics
