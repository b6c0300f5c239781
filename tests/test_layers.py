"""The Transformer blocks: padding, causality, the KV cache and pooling, on exact small cases."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from common.config import ModelConfig
from common.layers import KVCache, Transformer, last_token, masked_max, masked_mean, rotary_tables, rotate
from common.losses import IGNORE, linear_cross_entropy

CFG = ModelConfig(n_layer=2, d_hidn=32, n_head=4, d_ff=64, n_seq=16, n_segment=2, dropout=0.0, n_vocab=50)


def trunk(causal: bool, emb_ln: bool = True, rotary: bool = False) -> Transformer:
    torch.manual_seed(0)
    return Transformer(dataclasses.replace(CFG, rotary=rotary), causal=causal, embedding_layer_norm=emb_ln).eval()


SEQS = [[7, 8, 9, 10, 11, 12, 13], [20, 21, 22], [30, 31, 32, 33, 34]]


@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_padded_batch_equals_each_sequence_alone(padded, causal: bool, rotary: bool) -> None:
    model = trunk(causal, rotary=rotary)
    ids, mask = padded(SEQS)
    with torch.no_grad():
        batch_out = model(ids, attention_mask=mask)
        for i, s in enumerate(SEQS):
            alone = model(torch.tensor([s]))
            torch.testing.assert_close(batch_out[i, : len(s)], alone[0], atol=1e-5, rtol=1e-5)


def test_causal_model_cannot_see_the_future() -> None:
    model = trunk(causal=True, emb_ln=False)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    changed = ids.clone()
    changed[0, 4] = 40  # change token t+1 = 4
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[0, :4], b[0, :4], atol=0, rtol=0)
    assert not torch.allclose(a[0, 4:], b[0, 4:])


def test_bidirectional_model_sees_the_future() -> None:
    model = trunk(causal=False)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    changed = ids.clone()
    changed[0, 4] = 40
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0, :4], model(changed)[0, :4])


def test_padding_tokens_are_not_attended_to(padded) -> None:
    """Whatever sits in the padded slots, real positions see nothing of it."""
    model = trunk(causal=False)
    ids, mask = padded(SEQS)
    garbage = ids.masked_fill(mask == 0, 17)
    with torch.no_grad():
        a, b = model(ids, mask), model(garbage, mask)
    torch.testing.assert_close(a[mask.bool()], b[mask.bool()], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("rotary", [False, True])
def test_kv_cache_matches_full_recomputation(rotary: bool) -> None:
    model = trunk(causal=True, emb_ln=False, rotary=rotary)
    ids = torch.tensor([[3, 9, 4, 11, 25, 6, 7, 30, 2]])
    slots = torch.arange(16)
    with torch.no_grad():
        full = model(ids)
        cache = KVCache.empty(CFG, torch.zeros(1, dtype=torch.long), 16, torch.float32)
        prefix = model(ids[:, :4], cache=cache, slots=slots[:4])  # prefill
        steps = [model(ids[:, t : t + 1], cache=cache, slots=slots[t : t + 1]) for t in range(4, 7)]
        chunk = model(ids[:, 7:9], cache=cache, slots=slots[7:9])  # a multi-token chunk after a prefix
    incremental = torch.cat([prefix, *steps, chunk], dim=1)
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rotary", [False, True])
def test_left_padded_rows_in_the_kv_cache_match_each_row_alone(rotary: bool) -> None:
    """Rows of a batch padded on the left (their positions count from their first real token) get
    the hidden states each gets alone; the garbage in the padded slots leaks nowhere."""
    model = trunk(causal=True, emb_ln=False, rotary=rotary)
    rows = [[3, 9, 4, 11, 25], [7, 30], [5, 6, 8]]
    pads = torch.tensor([5 - len(r) for r in rows])
    ids = torch.tensor([[17] * (5 - len(r)) + r for r in rows])
    slots = torch.arange(8)
    with torch.no_grad():
        cache = KVCache.empty(CFG, pads, 8, torch.float32)
        prefix = model(ids, cache=cache, slots=slots[:5])
        step = model(torch.tensor([[12], [13], [14]]), cache=cache, slots=slots[5:6])
        assert torch.isfinite(prefix).all()  # pad queries attend to themselves, not to nothing
        for b, r in enumerate(rows):
            alone = model(torch.tensor([r + [12 + b]]))
            torch.testing.assert_close(prefix[b, pads[b]:], alone[0, :-1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(step[b, 0], alone[0, -1], atol=1e-5, rtol=1e-5)


def test_rotary_scores_depend_on_the_offset_only() -> None:
    """q . k of rotated queries and keys is the same for positions (i, j) and (i + s, j + s), and differs
    between offsets; rotating keeps each vector's norm."""
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i: int, j: int) -> float:
        return float((rotate(q, rotary_tables(torch.tensor([i]), 8)) * rotate(k, rotary_tables(torch.tensor([j]), 8))).sum())

    assert abs(score(3, 1) - score(10, 8)) < 1e-5 and abs(score(0, 5) - score(7, 12)) < 1e-5
    assert abs(score(3, 1) - score(3, 2)) > 1e-3
    assert abs(float(rotate(q, rotary_tables(torch.tensor([9]), 8)).norm()) - float(q.norm())) < 1e-5
    batched = rotary_tables(torch.tensor([[0, 1], [5, 6]]), 8)[0]  # (B, 1, T, Dh / 2): broadcasts over heads
    assert batched.shape == (2, 1, 2, 4)


def test_rotary_config_changes_what_attention_sees() -> None:
    """Same weights with and without rotary: different outputs (the option is not silently ignored)."""
    plain, rotary = trunk(causal=False), trunk(causal=False, rotary=True)
    rotary.load_state_dict(plain.state_dict())
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        assert not torch.allclose(plain(ids), rotary(ids), atol=1e-4)


def test_sequence_longer_than_n_seq_is_refused() -> None:
    with pytest.raises(ValueError, match="n_seq"):
        trunk(causal=True)(torch.ones(1, CFG.n_seq + 1, dtype=torch.long))


def test_pooling_ignores_padding() -> None:
    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    big = hidden.clone()
    big[0, 3:] = 1e4  # padded slots hold huge values: they must not leak
    torch.testing.assert_close(masked_mean(big, mask)[0], hidden[0, :3].mean(0))
    torch.testing.assert_close(masked_max(big, mask)[0], hidden[0, :3].amax(0))
    torch.testing.assert_close(last_token(big, mask), torch.stack([hidden[0, 2], hidden[1, 4]]))


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_ignored", [False, True])
def test_chunked_linear_cross_entropy_equals_full_logits(with_bias: bool, with_ignored: bool) -> None:
    """Loss, accuracy and gradients (hidden, weight, bias) equal F.cross_entropy on the full logits,
    with chunks that do not divide the rows, IGNORE targets adding nothing (a whole chunk of them
    too); with no grad it only sums the loss."""
    torch.manual_seed(0)
    n, d, v = 150, 8, 40
    hidden = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, d, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(0, v, (n,))
    if with_ignored:
        targets[torch.rand(n) < 0.3] = IGNORE
        targets[32:64] = IGNORE  # the second chunk of 32 scores nothing
    params = [hidden, weight] + ([bias] if with_bias else [])
    logits = F.linear(hidden, weight, bias)
    expected = F.cross_entropy(logits, targets, reduction="sum", ignore_index=IGNORE)
    expected_grads = torch.autograd.grad(0.5 * expected, params)
    loss, correct = linear_cross_entropy(hidden, weight, bias, targets, chunk_rows=32)
    grads = torch.autograd.grad(0.5 * loss, params)
    torch.testing.assert_close(loss, expected)
    assert correct.item() == (logits.argmax(-1) == targets).sum().item()  # IGNORE is never an argmax
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, bias, targets, chunk_rows=7)[0], expected)
