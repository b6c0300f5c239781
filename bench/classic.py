"""The classic way these scripts were written: the baseline of the pipeline comparison (case 1b).

Written for this benchmark, after the style of the classic tutorial code that
GPT / BERT fine-tuning scripts in PyTorch used to follow:

- batches are random (a shuffled list cut into batches) and each is padded to
  its longest review (`pad_sequence` in a collate function): in NSMC most of a
  batch is padding;
- attention is written out: separate Q, K, V projections, scores = Q K^T /
  sqrt(d), a -1e9 fill where a key is [PAD] (or in the future, for GPT),
  softmax, dropout, times V; the mask is built per batch as (B, T, T) and
  repeated for every head;
- the GPT classifier runs the full language-model projection (logits over the
  vocab for every position, padding included) on every step, as the classic
  model's forward returned both the LM and the class logits, even when the LM
  loss is off; only the class loss is trained, so autograd skips the LM
  logits' backward, but their forward is paid.

Same shapes as ours (ModelConfig), same post-LN layers and activations; only
the way of computing differs.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from common.config import ModelConfig
from common.layers import init_weights, last_token
from common.vocab import PAD_ID


def collate(reviews: list[np.ndarray], labels: np.ndarray, indices: np.ndarray) -> dict[str, Tensor]:
    """A classic collate_fn: pad the batch's reviews to its longest with [PAD]."""
    ids = pad_sequence([torch.as_tensor(reviews[i], dtype=torch.long) for i in indices],
                       batch_first=True, padding_value=PAD_ID)
    return {"input_ids": ids, "labels": torch.as_tensor(labels[indices], dtype=torch.long)}


class MultiHeadAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_head
        self.W_Q = nn.Linear(cfg.d_hidn, cfg.d_hidn)
        self.W_K = nn.Linear(cfg.d_hidn, cfg.d_hidn)
        self.W_V = nn.Linear(cfg.d_hidn, cfg.d_hidn)
        self.linear = nn.Linear(cfg.d_hidn, cfg.d_hidn)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """x (B, T, D); attn_mask (B, T, T) True where attention is NOT allowed."""
        B, T, _ = x.shape
        q = self.W_Q(x).view(B, T, self.n_head, self.d_head).transpose(1, 2)
        k = self.W_K(x).view(B, T, self.n_head, self.d_head).transpose(1, 2)
        v = self.W_V(x).view(B, T, self.n_head, self.d_head).transpose(1, 2)
        mask = attn_mask.unsqueeze(1).repeat(1, self.n_head, 1, 1)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d_head)
        scores = scores.masked_fill(mask, -1e9)
        probs = self.dropout(F.softmax(scores, dim=-1))
        context = torch.matmul(probs, v).transpose(1, 2).contiguous().view(B, T, -1)
        return self.linear(context)


class Layer(nn.Module):
    def __init__(self, cfg: ModelConfig, gelu_approximate: str):
        super().__init__()
        self.attention = MultiHeadAttention(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_hidn, eps=cfg.layer_norm_epsilon)
        self.fc1 = nn.Linear(cfg.d_hidn, cfg.d_ff)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_hidn)
        self.norm2 = nn.LayerNorm(cfg.d_hidn, eps=cfg.layer_norm_epsilon)
        self.dropout = nn.Dropout(cfg.dropout)
        self.gelu_approximate = gelu_approximate

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        x = self.norm1(x + self.dropout(self.attention(x, attn_mask)))
        ffn = self.fc2(F.gelu(self.fc1(x), approximate=self.gelu_approximate))
        return self.norm2(x + self.dropout(ffn))


class Trunk(nn.Module):
    """Embeddings + layers; the masks are built from the ids ([PAD] keys, and the future for a decoder)."""

    def __init__(self, cfg: ModelConfig, causal: bool):
        super().__init__()
        self.causal = causal
        self.token = nn.Embedding(cfg.n_vocab, cfg.d_hidn)
        self.position = nn.Embedding(cfg.n_seq, cfg.d_hidn)
        self.segment = None if causal else nn.Embedding(max(cfg.n_segment, 1), cfg.d_hidn)
        self.norm = nn.Identity() if causal else nn.LayerNorm(cfg.d_hidn, eps=cfg.layer_norm_epsilon)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Layer(cfg, "tanh" if causal else "none") for _ in range(cfg.n_layer))
        self.apply(init_weights)

    def forward(self, input_ids: Tensor) -> Tensor:
        B, T = input_ids.shape
        positions = torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.token(input_ids) + self.position(positions)
        if self.segment is not None:
            x = x + self.segment(torch.zeros_like(input_ids))
        x = self.dropout(self.norm(x))
        mask = input_ids.eq(PAD_ID).unsqueeze(1).expand(B, T, T)  # [PAD] keys
        if self.causal:
            future = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).triu(diagonal=1)
            mask = mask | future
        for layer in self.layers:
            x = layer(x, mask)
        return x


class GPTClassifier(nn.Module):
    """Decoder + LM projection over every position (computed every step) + class logits of the last real token."""

    def __init__(self, cfg: ModelConfig, n_labels: int = 2):
        super().__init__()
        self.trunk = Trunk(cfg, causal=True)
        self.projection_lm = nn.Linear(cfg.d_hidn, cfg.n_vocab, bias=False)
        self.projection_lm.weight = self.trunk.token.weight  # tied
        self.projection_cls = nn.Linear(cfg.d_hidn, n_labels)
        init_weights(self.projection_cls)

    def forward(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """-> (class loss, LM logits (B, T, n_vocab)); the LM logits are what the classic forward returned."""
        hidden = self.trunk(input_ids)
        logits_lm = self.projection_lm(hidden)
        logits_cls = self.projection_cls(last_token(hidden, input_ids.ne(PAD_ID)))
        return F.cross_entropy(logits_cls, labels), logits_lm


class BertClassifier(nn.Module):
    """Encoder + pooler (dense + tanh on [CLS]) + class logits."""

    def __init__(self, cfg: ModelConfig, n_labels: int = 2):
        super().__init__()
        self.trunk = Trunk(cfg, causal=False)
        self.pooler = nn.Linear(cfg.d_hidn, cfg.d_hidn)
        self.dropout = nn.Dropout(cfg.dropout)
        self.projection_cls = nn.Linear(cfg.d_hidn, n_labels)
        self.pooler.apply(init_weights), self.projection_cls.apply(init_weights)

    def forward(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        pooled = torch.tanh(self.pooler(self.trunk(input_ids)[:, 0]))
        logits_cls = self.projection_cls(self.dropout(pooled))
        return F.cross_entropy(logits_cls, labels), logits_cls


def classifier(name: str, cfg: ModelConfig) -> nn.Module:
    """The classic classifier of a model folder: GPT's decoder, or the BERT encoder (BERT and SpanBERT)."""
    return GPTClassifier(cfg) if name == "gpt" else BertClassifier(cfg)
