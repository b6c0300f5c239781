"""The chunked token loss behind the MLM and SBO heads equals the full-logits cross-entropy
at the masked positions (value, accuracy and gradients), and skips [PAD] targets."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bert.model import MLMHead, masked_lm_loss
from common.config import ModelConfig
from common.vocab import PAD_ID
from spanbert.model import SpanBoundaryHead, span_boundary_loss

CFG = ModelConfig(n_layer=1, d_hidn=8, n_head=2, d_ff=16, n_seq=8, dropout=0.0, n_vocab=30)
# Two rows of masked slots; [PAD] labels are unused slots, whose positions point at real tokens.
LABELS = torch.tensor([[11, 12, 13, PAD_ID], [14, 15, PAD_ID, PAD_ID]])
ROWS = torch.tensor([0, 0, 0, 1, 1])  # the rows of the non-[PAD] labels, in order
TARGETS = torch.tensor([11, 12, 13, 14, 15])


def check_against_full_logits(loss: torch.Tensor, metrics: dict, name: str, logits: torch.Tensor,
                              params: list[torch.Tensor]) -> None:
    expected = F.cross_entropy(logits, TARGETS)
    torch.testing.assert_close(loss, expected)
    assert metrics[f"{name}_loss"][1] == len(TARGETS) and metrics[f"{name}_acc"][1] == len(TARGETS)
    torch.testing.assert_close(metrics[f"{name}_loss"][0], expected * len(TARGETS))
    assert int(metrics[f"{name}_acc"][0]) == int((logits.argmax(-1) == TARGETS).sum())
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params)):
        torch.testing.assert_close(got, want)


def test_mlm_loss_equals_full_logits_cross_entropy_at_the_masked_positions() -> None:
    torch.manual_seed(0)
    head = MLMHead(CFG, torch.nn.Embedding(CFG.n_vocab, CFG.d_hidn)).double()
    hidden = torch.randn(2, 6, CFG.d_hidn, dtype=torch.float64, requires_grad=True)
    positions = torch.tensor([[1, 3, 4, 5], [2, 0, 1, 3]])
    loss, metrics = masked_lm_loss(head, hidden, positions, LABELS)
    logits = head(hidden[ROWS, torch.tensor([1, 3, 4, 2, 0])])
    check_against_full_logits(loss, metrics, "mlm", logits, [hidden, *head.parameters()])


def test_sbo_loss_equals_full_logits_cross_entropy_at_the_masked_positions() -> None:
    torch.manual_seed(0)
    head = SpanBoundaryHead(CFG, torch.nn.Embedding(CFG.n_vocab, CFG.d_hidn), max_targets=3).double()
    hidden = torch.randn(2, 8, CFG.d_hidn, dtype=torch.float64, requires_grad=True)
    left = torch.tensor([[0, 0, 0, 0], [3, 3, 3, 1]])
    right = torch.tensor([[4, 4, 4, 7], [6, 6, 6, 2]])
    offset = torch.tensor([[0, 1, 2, 0], [0, 1, 2, 0]])
    loss, metrics = span_boundary_loss(head, hidden, LABELS, left, right, offset)
    keep = LABELS != PAD_ID
    logits = head(hidden[ROWS, left[keep]], hidden[ROWS, right[keep]], offset[keep])
    check_against_full_logits(loss, metrics, "sbo", logits, [hidden, *head.parameters()])
