"""The representation-collapse probe (common/diagnose.py) on exact small cases."""
from __future__ import annotations

import torch

from common.config import ModelConfig
from common.diagnose import layer_similarities, mean_position_similarity
from gpt.model import GPTLMHeadModel


def test_similarity_of_identical_orthogonal_and_padded_positions() -> None:
    same = torch.tensor([[[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]])  # one direction: collapsed
    orthogonal = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # third position is padding
    assert abs(mean_position_similarity(same, torch.ones(1, 3)) - 1.0) < 1e-6
    assert abs(mean_position_similarity(orthogonal, torch.tensor([[1, 1, 0]]))) < 1e-6


def test_layer_similarities_reports_embeddings_and_every_layer() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=3, d_hidn=16, n_head=2, d_ff=32, n_seq=12, dropout=0.0, n_vocab=40)
    ids = torch.randint(7, 40, (2, 12))
    sims = layer_similarities(GPTLMHeadModel(cfg), {"input_ids": ids, "labels": ids})
    assert len(sims) == cfg.n_layer + 1
    assert all(-1.0 <= s <= 1.0 for s in sims)
    assert sims[0] < 0.5  # random embeddings of random tokens are far from collapsed
