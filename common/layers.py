"""The Transformer blocks every model is built from.

Post-LayerNorm layers as in the GPT-1 and BERT papers (and Hugging Face's
`OpenAIGPTModel` / `BertModel`): x = LN(x + Dropout(Attn(x))); x = LN(x + Dropout(FFN(x))).
Attention runs on `torch.nn.functional.scaled_dot_product_attention`, which
picks a fused kernel (flash / memory-efficient) where the device has one.
`ModelConfig.rotary` adds rotary position embeddings to the queries and keys
(a deviation from the papers; the encoders' experiment uses it, see bert/README.md).

Shapes: B = batch, T = sequence length, D = d_hidn, H = n_head, Dh = D / H.
`attention_mask` is (B, T) with 1 (or True) at real tokens and 0 at padding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.config import ModelConfig
from common.losses import Metrics, token_loss


class Embeddings(nn.Module):
    """Token + learned position (+ segment) embeddings, then (LayerNorm) and dropout.

    GPT-1 sums token and position embeddings and applies dropout; BERT also adds
    segment embeddings and normalizes the sum (`layer_norm=True`).
    """

    def __init__(self, cfg: ModelConfig, layer_norm: bool):
        super().__init__()
        self.token = nn.Embedding(cfg.n_vocab, cfg.d_hidn)
        self.position = nn.Embedding(cfg.n_seq, cfg.d_hidn)
        self.segment = nn.Embedding(cfg.n_segment, cfg.d_hidn) if cfg.n_segment else None
        self.norm = nn.LayerNorm(cfg.d_hidn, eps=cfg.layer_norm_epsilon) if layer_norm else nn.Identity()
        self.dropout = nn.Dropout(cfg.dropout)
        self.n_seq = cfg.n_seq

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        """(B, T) ids -> (B, T, D). positions: (B, T) position ids; None: 0 .. T-1 in every row."""
        T = input_ids.size(1)
        if positions is None:
            if T > self.n_seq:
                raise ValueError(f"sequence of {T} tokens exceeds n_seq={self.n_seq}")
            positions = torch.arange(T, device=input_ids.device)
        x = self.token(input_ids) + self.position(positions)
        if self.segment is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.segment(token_type_ids)
        return self.dropout(self.norm(x))


@dataclass
class KVCache:
    """Static key/value cache for incremental decoding: every layer's keys and values
    in buffers of a fixed length, and the layout of the batch's left-padded prompts.

    keys/values: one (B, H, max_len, Dh) buffer per layer; pads: (B,) left-padding of each
    row (its real tokens start at slot pads[b]); slot_ids: arange(max_len).
    A trunk call writes its tokens' keys/values at the slots it is given (a tensor) and
    attends over the whole buffer under a mask, so a decode step has the same shapes at
    every position: no per-step allocation or concatenation, and one compiled graph serves
    every step. The buffers start at zero, not torch.empty: a masked slot gets weight 0,
    and 0 x NaN from uninitialized memory would still be NaN.
    """

    keys: list[Tensor]
    values: list[Tensor]
    pads: Tensor
    slot_ids: Tensor

    @classmethod
    def empty(cls, cfg: ModelConfig, pads: Tensor, max_len: int, dtype: torch.dtype) -> "KVCache":
        """A zeroed cache for len(pads) rows of up to max_len slots, on pads' device."""
        shape = (len(pads), cfg.n_head, max_len, cfg.d_head)
        zeros = [torch.zeros(shape, device=pads.device, dtype=dtype) for _ in range(2 * cfg.n_layer)]
        return cls(zeros[::2], zeros[1::2], pads, torch.arange(max_len, device=pads.device))

    def positions(self, slots: Tensor) -> Tensor:
        """Position ids (B, T) of tokens written at `slots` (T,): counted from each row's first real token."""
        return (slots - self.pads[:, None]).clamp_min(0)

    def mask(self, slots: Tensor) -> Tensor:
        """(B, 1, T, max_len) bool: a query at slot s sees the real tokens at slots <= s, and itself
        (a left-pad query would otherwise see nothing, and a softmax over nothing is NaN)."""
        s = self.slot_ids
        seen = (s >= self.pads[:, None])[:, None, :] & (s <= slots[:, None])
        return (seen | (s == slots[:, None]))[:, None]


def rotary_tables(positions: Tensor, d_head: int) -> tuple[Tensor, Tensor]:
    """(cos, sin) of the rotary angles position x 10000^(-2i / d_head), i < d_head / 2 (Su et al., 2021):
    (T, d_head / 2) for positions (T,), (B, 1, T, d_head / 2) for positions (B, T), broadcasting over heads."""
    inverse = 10000.0 ** (-torch.arange(0, d_head, 2, device=positions.device, dtype=torch.float32) / d_head)
    angles = positions.float()[..., None] * inverse
    if positions.dim() == 2:
        angles = angles[:, None]
    return angles.cos(), angles.sin()


def rotate(x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
    """Queries or keys (B, H, T, Dh) rotated by their positions' angles: coordinate i of each head's first
    half is paired with coordinate i of its second half (the GPT-NeoX layout), so q . k depends on the
    positions only through their difference."""
    cos, sin = rotary
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_head
        self.qkv = nn.Linear(cfg.d_hidn, 3 * cfg.d_hidn)
        self.out = nn.Linear(cfg.d_hidn, cfg.d_hidn)
        self.attn_dropout = cfg.dropout

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
        slots: Tensor | None = None,
        rotary: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """x (B, T, D) -> (B, T, D). attn_mask: bool, broadcastable to (B, H, T, S), True = may attend.
        With `cache`, this layer's keys/values are written at `slots` (T,) and the queries attend
        over the whole cache; attn_mask is then the cache's mask (causality and padding).
        rotary: the (cos, sin) tables of the tokens' positions (`rotary_tables`), or None."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.d_head).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
        if rotary is not None:  # before caching: a cached key keeps the rotation of its own position
            q, k = rotate(q, rotary), rotate(k, rotary)
        if cache is not None:
            cache.keys[layer].index_copy_(2, slots, k)  # in place: nothing allocated, nothing concatenated
            cache.values[layer].index_copy_(2, slots, v)
            # written out: for a few queries over the whole cache under a mask, the CPU's fused SDPA
            # kernel was slower than these three ops (and torch.compile fuses the mask into the softmax)
            scores = q @ cache.keys[layer].transpose(-1, -2) * self.d_head**-0.5  # (B, H, T, max_len)
            y = scores.masked_fill(~attn_mask, float("-inf")).softmax(-1) @ cache.values[layer]
            return self.out(y.transpose(1, 2).reshape(B, T, D))
        if is_causal and attn_mask is not None:
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            attn_mask, is_causal = attn_mask & causal, False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    """Position-wise FFN: Linear -> GELU -> Linear.

    BERT's code uses the exact (erf) GELU, GPT-1's code the tanh approximation
    (`gelu_approximate="tanh"`); Hugging Face's BertModel / OpenAIGPTModel follow them.
    """

    def __init__(self, cfg: ModelConfig, gelu_approximate: str = "none"):
        super().__init__()
        self.fc = nn.Linear(cfg.d_hidn, cfg.d_ff)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_hidn)
        self.gelu_approximate = gelu_approximate

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.gelu_approximate))


class TransformerLayer(nn.Module):
    """One post-LayerNorm layer."""

    def __init__(self, cfg: ModelConfig, gelu_approximate: str = "none"):
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.attention_norm = nn.LayerNorm(cfg.d_hidn, eps=cfg.layer_norm_epsilon)
        self.ffn = FeedForward(cfg, gelu_approximate)
        self.ffn_norm = nn.LayerNorm(cfg.d_hidn, eps=cfg.layer_norm_epsilon)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None, is_causal: bool, cache: KVCache | None = None, layer: int = 0,
                slots: Tensor | None = None, rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, attn_mask, is_causal, cache, layer, slots, rotary)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class Transformer(nn.Module):
    """Embeddings + a stack of layers: the trunk shared by GPT, BERT and SpanBERT.

    causal=True makes it a decoder (GPT): position t attends to positions <= t.
    With right padding (all our batches) a causal model needs no padding mask:
    real positions never look ahead at the pads that follow them.
    gelu_approximate: "none" (exact GELU, BERT) or "tanh" (GPT-1), see FeedForward.
    """

    def __init__(self, cfg: ModelConfig, causal: bool, embedding_layer_norm: bool, gelu_approximate: str = "none"):
        super().__init__()
        if cfg.n_vocab <= 0:
            raise ValueError("ModelConfig.n_vocab is not set: call cfg.with_vocab(len(vocab))")
        self.cfg, self.causal = cfg, causal
        self.embeddings = Embeddings(cfg, layer_norm=embedding_layer_norm)
        self.layers = nn.ModuleList(TransformerLayer(cfg, gelu_approximate) for _ in range(cfg.n_layer))
        self.apply(init_weights)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        cache: KVCache | None = None,
        slots: Tensor | None = None,
    ) -> Tensor:
        """(B, T) ids -> (B, T, D) hidden states. With `cache`, the tokens are written at cache slots
        `slots` (T,) (a tensor, so that every decode step has the same inputs) and attend over the
        cache; their positions and mask come from the cache's layout (left-padded prompts)."""
        if cache is not None:
            if slots is None:
                raise ValueError("a KVCache needs the slots the tokens go to")
            x = self.embeddings(input_ids, token_type_ids, positions=cache.positions(slots))
            attn_mask = cache.mask(slots)  # once for every layer
        else:
            x = self.embeddings(input_ids, token_type_ids)
            attn_mask = None
            # A batch without padding skips the mask (SDPA's faster kernels) in eager mode on the CPU; compiled
            # or on a GPU the mask is always passed: the check would read the data back (a graph break, a
            # host sync every step).
            if attention_mask is not None and (torch.compiler.is_compiling() or attention_mask.device.type != "cpu"
                                               or not bool(attention_mask.all())):
                attn_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): keys that may be attended
        rotary = None
        if self.cfg.rotary:  # once for every layer
            positions = cache.positions(slots) if cache is not None else torch.arange(input_ids.size(1), device=x.device)
            rotary = rotary_tables(positions, self.cfg.d_head)
        for i, layer in enumerate(self.layers):
            x = layer(x, attn_mask, self.causal, cache, i, slots, rotary)
        return x


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """N(0, 0.02) weights, zero biases, unit LayerNorm: the BERT / GPT-1 initialization."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def masked_mean(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean over real positions: (B, T, D), (B, T) -> (B, D). Padding contributes nothing."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_max(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Max over real positions: (B, T, D), (B, T) -> (B, D). Padding can never win."""
    return hidden.masked_fill(~attention_mask.bool().unsqueeze(-1), torch.finfo(hidden.dtype).min).amax(1)


def last_token(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Hidden state of each row's last real token (right padding): (B, T, D) -> (B, D)."""
    last = attention_mask.long().sum(1) - 1
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last]


class LMHead(nn.Module):
    """Transform (dense, GELU, LayerNorm) + output projection tied to the token embedding + a bias.

    BERT's MLM head and SpanBERT's MLM head use the transform (`transform=True`);
    GPT-1 projects the hidden state directly, and SpanBERT's SBO head (a subclass)
    its own MLP's output. Only the rows that are scored are passed in, so no
    logits are computed for positions without a target.

    The output bias is BERT's; GPT-1 has none, we give it one too (`init_bias_to_log_prior`):
    without it the only way to predict the unigram distribution - the first thing a
    language model learns - is a hidden state pointing the same way at every position.
    A post-LN decoder trained that way collapsed (all positions' hidden states alike,
    held-out loss stuck at the unigram entropy; see gpt/README.md). Starting the
    bias at the log unigram distribution leaves the hidden states free to carry context.
    """

    def __init__(self, cfg: ModelConfig, token_embedding: nn.Embedding, transform: bool):
        super().__init__()
        self.transform = (
            nn.Sequential(nn.Linear(cfg.d_hidn, cfg.d_hidn), nn.GELU(), nn.LayerNorm(cfg.d_hidn, eps=cfg.layer_norm_epsilon))
            if transform else nn.Identity()
        )
        self.token_embedding = token_embedding  # tied: shares the parameter, not a copy
        self.bias = nn.Parameter(torch.zeros(cfg.n_vocab))
        self.transform.apply(init_weights)

    @torch.no_grad()
    def init_bias_to_log_prior(self, token_counts: np.ndarray) -> None:
        """Set the bias to the log unigram distribution of `token_counts` (n_vocab,), add-one smoothed,
        so that the untrained head already predicts the token frequencies."""
        counts = torch.as_tensor(np.asarray(token_counts, dtype=np.float64) + 1.0)
        if counts.shape != self.bias.shape:
            raise ValueError(f"token_counts has shape {tuple(counts.shape)}, the vocab {tuple(self.bias.shape)}")
        self.bias.copy_((counts / counts.sum()).log().to(self.bias.dtype))

    def forward(self, hidden: Tensor) -> Tensor:
        """(..., D) -> (..., n_vocab) logits."""
        return F.linear(self.transform(hidden), self.token_embedding.weight, self.bias)

    def loss(self, hidden: Tensor, targets: Tensor, name: str = "") -> tuple[Tensor, Metrics]:
        """Mean cross-entropy and accuracy of rows (N, D) against targets (N,) (`token_loss`),
        without materializing the (N, n_vocab) logits."""
        return token_loss(self.transform(hidden), self.token_embedding.weight, self.bias, targets, name)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flops_per_token(cfg: ModelConfig, seq_len: int, lm_head_tokens_ratio: float = 1.0) -> float:
    """Training FLOPs per token (forward + backward = 3 x forward), for MFU/GFLOP/s reports:
    6 x (non-embedding params) + 6 x n_vocab x D for the tied output layer
    (scaled by the share of tokens scored) + attention scores 12 x L x T x D."""
    D, L = cfg.d_hidn, cfg.n_layer
    layer_params = L * (4 * D * D + 2 * D * cfg.d_ff)
    return 6 * layer_params + 6 * cfg.n_vocab * D * lm_head_tokens_ratio + 12 * L * seq_len * D


