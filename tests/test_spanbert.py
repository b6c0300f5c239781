"""SpanBERT: span masking (lengths, whole words, gaps, boundaries, 80/10/10 per span),
the SBO head and losses, pooling over real tokens, and the pretrain -> train chain."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bert.train import wrap
from common.cli import REPO_ROOT
from common.config import ModelConfig
from common.io import read_csv
from common.token_store import StoreWriter, TokenStore
from common.vocab import CLS_ID, MASK_ID, N_SPECIAL, PAD_ID, SEP_ID
from spanbert.data import (GEOMETRIC_P, MAX_SPAN_WORDS, choose_spans, mask_spans, max_span_masked, segments,
                           span_length_probs)
from spanbert.model import SBO_MAX_TARGETS, SpanBertForPreTraining, SpanBertForSequenceClassification
from spanbert.pretrain import PretrainingDataset

N_VOCAB = 1000
CFG = ModelConfig(n_layer=2, d_hidn=32, n_head=4, d_ff=64, n_seq=64, n_segment=2, dropout=0.0, n_vocab=N_VOCAB)

# A synthetic vocab: ids divisible by 3 begin a word, the others continue one; specials are word starts.
WORD_STARTS = np.array([i < N_SPECIAL or i % 3 == 0 for i in range(N_VOCAB)])
STARTERS = np.array([i for i in range(N_SPECIAL, N_VOCAB) if WORD_STARTS[i]])
CONTINUATIONS = np.array([i for i in range(N_SPECIAL, N_VOCAB) if not WORD_STARTS[i]])


def sentence(n_words: int, rng: np.random.Generator) -> np.ndarray:
    """[CLS] words of 1-3 pieces [SEP]."""
    sizes = rng.integers(1, 4, size=n_words)
    tokens = rng.choice(CONTINUATIONS, size=int(sizes.sum()))
    tokens[np.cumsum(sizes) - sizes] = rng.choice(STARTERS, size=n_words)
    return np.concatenate([[CLS_ID], tokens, [SEP_ID]]).astype(np.int64)


def is_word_boundary(ids: np.ndarray, i: int) -> bool:
    """Whether a word begins at position i (or i is a special token, or the end)."""
    return i >= len(ids) or ids[i] < N_SPECIAL or bool(WORD_STARTS[ids[i]])


# --- span masking ------------------------------------------------------------------------

def test_length_distribution_is_truncated_geometric_with_mean_3_8() -> None:
    probs = span_length_probs()
    assert len(probs) == MAX_SPAN_WORDS and probs.sum() == pytest.approx(1.0)
    assert probs[1] / probs[0] == pytest.approx(1 - GEOMETRIC_P)
    assert (np.arange(1, MAX_SPAN_WORDS + 1) * probs).sum() == pytest.approx(3.8, abs=0.01)  # the paper's mean


def test_span_lengths_follow_geo_0_2_clipped_at_10() -> None:
    """Chi-square of the word lengths of ~8,000 spans chosen in long sequences against Geo(0.2) on 1..10."""
    rng = np.random.default_rng(0)
    lengths = np.concatenate([choose_spans(sentence(600, rng), WORD_STARTS, 0.15, rng)[2] for _ in range(250)])
    assert len(lengths) > 5000 and lengths.min() >= 1 and lengths.max() <= MAX_SPAN_WORDS
    observed = np.bincount(lengths, minlength=MAX_SPAN_WORDS + 1)[1:]
    expected = span_length_probs() * len(lengths)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 27.88, f"chi-square {chi2:.1f} over the 0.1% critical value (9 degrees of freedom): {observed}"
    assert lengths.mean() == pytest.approx(3.8, abs=0.15)


def test_spans_are_whole_words_never_overlapping_or_touching() -> None:
    rng = np.random.default_rng(1)
    n_spans = 0
    for _ in range(250):
        ids = sentence(int(rng.integers(1, 60)), rng)
        starts, ends, n_words = choose_spans(ids, WORD_STARTS, float(rng.uniform(0.1, 0.9)), rng)
        n_spans += len(starts)
        assert (starts >= 1).all() and (ends <= len(ids) - 1).all()  # never [CLS] or [SEP]
        assert (starts[1:] > ends[:-1]).all()  # sorted, at least one unmasked token between two spans
        for s, e, n in zip(starts, ends, n_words):
            assert is_word_boundary(ids, s) and is_word_boundary(ids, e)  # whole words
            assert sum(is_word_boundary(ids, i) for i in range(s, e)) == n
    assert n_spans > 1000


@pytest.mark.parametrize("n_words", [40, 200])
def test_expected_masked_share_is_the_budget(n_words: int) -> None:
    """Whole spans, and on average exactly the budget: the span crossing it is kept with probability
    remaining / length (always keeping it masked 18-20% at n_seq 128)."""
    rng = np.random.default_rng(2)
    shares = []
    for _ in range(2000 if n_words == 40 else 400):
        ids = sentence(n_words, rng)
        starts, ends, _ = choose_spans(ids, WORD_STARTS, 0.15, rng)
        budget = round(0.15 * (len(ids) - 2))
        n_masked = int((ends - starts).sum())
        assert n_masked < budget + (ends - starts).max()  # at most one span crosses the budget
        shares.append(n_masked / (len(ids) - 2))
    standard_error = np.std(shares) / np.sqrt(len(shares))
    assert abs(np.mean(shares) - 0.15) < 4 * standard_error + 0.002, (np.mean(shares), standard_error)


def test_a_span_never_exceeds_the_budget() -> None:
    """One "word" of 300 pieces (text without spaces) among short words is never masked."""
    rng = np.random.default_rng(7)
    long_word = [STARTERS[0], *rng.choice(CONTINUATIONS, size=299)]
    for _ in range(50):
        before = sentence(100, rng)[:-1]  # [CLS] and words
        ids = np.concatenate([before, long_word, sentence(100, rng)[1:]])
        starts, ends, _ = choose_spans(ids, WORD_STARTS, 0.15, rng)
        assert len(starts) > 3 and (ends - starts).max() <= round(0.15 * (len(ids) - 2))
        assert ((ends <= len(before)) | (starts >= len(before) + 300)).all()


def test_boundaries_and_offsets_at_the_ends_of_the_sequence() -> None:
    # One word of three pieces: the span is the whole content; its boundaries are [CLS] and [SEP].
    ids = np.array([CLS_ID, 30, 31, 32, SEP_ID])
    m = mask_spans(ids, WORD_STARTS, 1.0, np.random.default_rng(0), N_VOCAB)
    assert m.positions.tolist() == [1, 2, 3] and m.labels.tolist() == [30, 31, 32]
    assert m.span_left.tolist() == [0, 0, 0] and m.span_right.tolist() == [4, 4, 4]
    assert m.span_offset.tolist() == [0, 1, 2]
    # Everywhere: the boundaries are the tokens just outside the span, and are never masked.
    rng = np.random.default_rng(3)
    seen_cls = seen_sep = False
    for _ in range(300):
        ids = sentence(int(rng.integers(2, 8)), rng)
        m = mask_spans(ids, WORD_STARTS, 0.5, rng, N_VOCAB)
        masked = set(m.positions.tolist())
        for p, left, right, offset in zip(m.positions, m.span_left, m.span_right, m.span_offset):
            assert left < p < right and p - left - 1 == offset
            assert set(range(left + 1, right)) <= masked and left not in masked and right not in masked
        seen_cls |= bool((m.span_left == 0).any()) and bool((ids[m.span_left] == CLS_ID).any())
        seen_sep |= bool((ids[m.span_right] == SEP_ID).any())
        assert (m.input_ids[0], m.input_ids[-1]) == (CLS_ID, SEP_ID)
    assert seen_cls and seen_sep


def test_replacement_is_decided_per_span_80_10_10() -> None:
    rng = np.random.default_rng(4)
    kinds = {"mask": 0, "random": 0, "keep": 0}
    for _ in range(100):
        ids = sentence(600, rng)
        m = mask_spans(ids, WORD_STARTS, 0.3, rng, N_VOCAB)
        assert (m.labels == ids[m.positions]).all()  # labels are the original tokens
        unmasked = np.setdiff1d(np.arange(len(ids)), m.positions)
        assert (m.input_ids[unmasked] == ids[unmasked]).all()
        for left in np.unique(m.span_left):
            span = m.positions[m.span_left == left]
            new, old = m.input_ids[span], ids[span]
            if (new == MASK_ID).any():
                assert (new == MASK_ID).all(), "a span is masked as a whole or not at all"
                kinds["mask"] += 1
            elif (new == old).all():
                kinds["keep"] += 1
            else:
                assert (new >= N_SPECIAL).all()  # random tokens are never special pieces
                kinds["random"] += 1
    n = sum(kinds.values())
    assert n > 4000
    assert kinds["mask"] / n == pytest.approx(0.8, abs=0.025)
    assert kinds["random"] / n == pytest.approx(0.1, abs=0.02)
    assert kinds["keep"] / n == pytest.approx(0.1, abs=0.02)


def test_segments_cut_at_word_starts() -> None:
    rng = np.random.default_rng(5)
    ids = sentence(300, rng)[1:-1]
    pieces = list(segments(ids, 50, WORD_STARTS))
    assert np.concatenate(pieces).tolist() == ids.tolist()
    assert all(0 < len(p) <= 50 for p in pieces) and len(pieces[0]) >= 48  # filled up to a word end
    assert all(WORD_STARTS[p[0]] for p in pieces)


# --- the pretraining dataset and model ---------------------------------------------------

@pytest.fixture()
def dataset(tmp_path: Path) -> PretrainingDataset:
    rng = np.random.default_rng(6)
    instances = [sentence(int(rng.integers(3, 25)), rng)[: CFG.n_seq] for _ in range(40)]
    meta = {"format": "spanbert", "n_seq": CFG.n_seq, "mask_prob": 0.15, "vocab_fingerprint": "x"}
    with StoreWriter(tmp_path / "store", meta) as w:
        w.append("word_starts", WORD_STARTS.astype(np.uint8))
        w.append("offsets", np.concatenate([[0], np.cumsum([len(x) for x in instances])]).astype(np.int64))
        w.append("tokens", np.concatenate(instances).astype(np.uint16))
    return PretrainingDataset(TokenStore(tmp_path / "store"), CFG)


def test_collate_lays_out_sbo_targets_as_the_mlm_targets(dataset: PretrainingDataset) -> None:
    torch.manual_seed(0)
    batch = dataset.collate(np.arange(8))
    torch.manual_seed(0)
    again = dataset.collate(np.arange(8))  # the same torch RNG state (as after a resume) draws the same masks
    assert all(torch.equal(v, again[k]) for k, v in batch.items())
    for i in range(8):
        original = torch.from_numpy(dataset.instance(i))
        keep = batch["mlm_labels"][i] != PAD_ID
        pos, left, right = (batch[k][i][keep] for k in ("mlm_positions", "span_left", "span_right"))
        assert torch.equal(batch["mlm_labels"][i][keep], original[pos])
        assert (left < pos).all() and (pos < right).all() and (right < len(original)).all()
        assert torch.equal(batch["span_offset"][i][keep], pos - left - 1)
        assert int(batch["attention_mask"][i].sum()) == len(original)


def test_pretraining_step_compiles_to_one_graph(dataset: PretrainingDataset) -> None:
    """torch.compile traces MLM + SBO without a graph break, and batches of other lengths and masked counts
    reuse it: every batch is (B, n_seq) tokens and (B, slots) masked slots, IGNORE where unused."""
    torch.manual_seed(0)
    batches = [dataset.collate(np.arange(i, i + 8)) for i in range(0, 40, 8)]
    # unpadded, they would differ in length or masked count (the longest of each batch)
    widths = {(int(b["attention_mask"].sum(1).max()), int((b["mlm_labels"] != PAD_ID).sum(1).max())) for b in batches}
    assert len(widths) > 1 and {tuple(b["span_left"].shape) for b in batches} == {(8, dataset.slots)}
    model = SpanBertForPreTraining(CFG)
    explanation = torch._dynamo.explain(model)(**batches[0])
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(model, backend=counter)
    for batch in batches:
        compiled(**batch)
    assert counter.frame_count == 1


def test_masked_slots_hold_the_most_the_span_masking_chooses() -> None:
    """max_span_masked bounds choose_spans on any sequence (pack would refuse a row longer than the slots)."""
    rng = np.random.default_rng(5)
    for n_words in (5, 30, 60):
        for _ in range(300):
            ids = sentence(n_words, rng)[:64]
            starts, ends, _ = choose_spans(ids, WORD_STARTS, 0.15, rng)
            assert int((ends - starts).sum()) <= max_span_masked(len(ids), 0.15)


def test_pretraining_loss_is_mlm_plus_sbo_with_tied_outputs(dataset: PretrainingDataset) -> None:
    torch.manual_seed(0)
    model = SpanBertForPreTraining(CFG)
    embedding = model.trunk.token_embedding.weight
    assert model.mlm_head.token_embedding.weight is embedding and model.sbo_head.token_embedding.weight is embedding
    mlp = model.sbo_head.mlp  # the paper's 2-layer head: (Linear, GELU, LayerNorm) x 2
    assert [type(m).__name__ for m in mlp] == ["Linear", "GELU", "LayerNorm"] * 2
    assert mlp[0].in_features == 3 * CFG.d_hidn and model.sbo_head.position_embeddings.num_embeddings == SBO_MAX_TARGETS
    loss, metrics = model(**dataset.collate(np.arange(8)))
    mean = {k: float(s) / float(c) for k, (s, c) in metrics.items()}
    assert set(metrics) == {"loss", "mlm_loss", "mlm_acc", "sbo_loss", "sbo_acc"}
    assert metrics["sbo_loss"][1] == metrics["mlm_loss"][1]  # every masked token is an SBO target too
    assert loss.item() == pytest.approx(mean["mlm_loss"] + mean["sbo_loss"], rel=1e-5)
    assert mean["loss"] == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    assert model.sbo_head.position_embeddings.weight.grad.abs().sum() > 0
    # Every trained parameter gets a gradient (DDP requires it); the pooler, unused without NSP, is frozen.
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert not any(p.requires_grad for p in model.trunk.pooler.parameters())


def test_sbo_reads_only_the_boundaries_and_the_offset() -> None:
    """The SBO prediction of a masked token does not depend on its own encoding."""
    torch.manual_seed(0)
    model = SpanBertForPreTraining(CFG).eval()
    hidden = torch.randn(1, 10, CFG.d_hidn)
    left, right, offset = torch.tensor([2]), torch.tensor([6]), torch.tensor([1])
    before = model.sbo_head(hidden[0, left], hidden[0, right], offset)
    hidden[0, 3:6] = torch.randn(3, CFG.d_hidn)  # change the span's own states
    torch.testing.assert_close(model.sbo_head(hidden[0, left], hidden[0, right], offset), before)
    assert not torch.allclose(model.sbo_head(hidden[0, left], hidden[0, right], offset + 1), before)


# --- classification -----------------------------------------------------------------------

def padded(reviews: list[list[int]], extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    seqs = [wrap(r, CFG.n_seq) for r in reviews]
    T = max(map(len, seqs)) + extra
    ids = torch.full((len(seqs), T), PAD_ID)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, (ids != PAD_ID).long()


REVIEWS = [[10, 11, 12, 13, 14, 15, 16, 17], [20, 21], [30, 31, 32, 33]]


@pytest.mark.parametrize("logit", ["cls", "mean", "max"])
def test_pooling_ignores_padding(logit: str) -> None:
    torch.manual_seed(0)
    model = SpanBertForSequenceClassification(CFG, logit=logit).eval()
    ids, mask = padded(REVIEWS, extra=5)
    with torch.no_grad():
        batch_logits = model.classify(ids, mask)[0]
        for i, review in enumerate(REVIEWS):
            alone = model.classify(*padded([review]))[0][0]
            torch.testing.assert_close(batch_logits[i], alone, atol=1e-5, rtol=1e-5)


def test_logit_options_differ_and_are_validated() -> None:
    ids, mask = padded(REVIEWS)
    outputs = []
    for logit in ("cls", "mean", "max"):
        torch.manual_seed(0)
        outputs.append(SpanBertForSequenceClassification(CFG, logit=logit).eval().classify(ids, mask)[0])
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[1], outputs[2])
    with pytest.raises(ValueError, match="logit"):
        SpanBertForSequenceClassification(CFG, logit="first")


def test_on_cls_without_pretraining_it_is_berts_classifier() -> None:
    """experiment.py takes BERT's logged scratch rows as its own cls ones (Experiment.scratch_twin): from one
    seed the two train.py build the same weights, wrap a review alike, and take the same training step
    (dropout draws included), so their runs are the same numbers."""
    import bert.train
    import spanbert.train

    assert bert.train.wrap is spanbert.train.wrap
    cfg = dataclasses.replace(CFG, dropout=0.1)
    ids, mask = padded(REVIEWS, extra=3)
    labels = torch.tensor([i % 2 for i in range(len(REVIEWS))])
    stepped = []
    for script in (bert.train, spanbert.train):
        torch.manual_seed(3)
        model = script.classifier(cfg, {}).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(2):
            loss, _ = model(ids, mask, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss))
        stepped.append((losses, model.state_dict()))
    (bert_losses, bert_state), (span_losses, span_state) = stepped
    assert bert_losses == span_losses and bert_state.keys() == span_state.keys()
    assert all(torch.equal(bert_state[k], span_state[k]) for k in bert_state)


def test_wrap_is_cls_review_sep_within_n_seq() -> None:
    assert wrap(list(range(10, 100)), 16) == [CLS_ID, *range(10, 24), SEP_ID]


# --- the scripts, end to end ---------------------------------------------------------------

def run(script: str, *args: str, cwd: Path = REPO_ROOT / "spanbert") -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # tiny models: threads only contend
    done = subprocess.run([sys.executable, script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_pretrain_then_train_on_the_sample_beats_chance(tmp_path: Path, sample_vocab: Path,
                                                        sample_corpus: dict[str, Path]) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"n_layer": 2, "d_hidn": 64, "n_head": 4, "d_ff": 128, "n_seq": 64, "n_segment": 2}))
    common = ["--vocab", str(sample_vocab), "--config", str(config)]

    run("data.py", "--input", str(sample_corpus["kowiki"]), "--output", str(tmp_path / "store"),
        "--vocab", str(sample_vocab), "--n_seq", "64", "--workers", "1")
    out = run("pretrain.py", "--input", str(tmp_path / "store"), "--save", str(tmp_path / "pre.pth"), *common,
              "--epoch", "2", "--batch", "32", "--lr", "1e-3", "--save_every", "0")
    assert "sbo loss" in out and "held-out" in out
    log = json.loads((tmp_path / "pre.log.json").read_text())
    assert {"heldout_mlm_acc", "heldout_sbo_acc"} <= set(log[-1])
    assert log[-1]["train_loss"] < log[0]["train_loss"]

    out = run("train.py", "--train", str(sample_corpus["train"]), "--test", str(sample_corpus["test"]),
              "--pretrain", str(tmp_path / "pre.pth"), "--save", str(tmp_path / "best.pth"), *common,
              "--results", str(tmp_path / "results.csv"), "--logit", "mean",
              "--epoch", "4", "--batch", "16", "--lr", "2e-3", "--dev_size", "40")
    row = read_csv(tmp_path / "results.csv")[-1]
    assert row["item"] == "spanbert-pre-mean"
    test_acc = float(row["test_acc"])
    assert test_acc > 0.6, f"test accuracy {test_acc} is not above chance (0.5)\n{out}"

    out = run("predict.py", "--model", str(tmp_path / "best.pth"), "--vocab", str(sample_vocab), "정말 재밌어요", "지루하고 별로")
    assert len(out.splitlines()) == 2 and all(line.split("\t")[0] in ("0", "1") for line in out.splitlines())


def test_review_text_is_packed_in_front_and_spans_stay_inside_one_review(tmp_path: Path, sample_corpus,
                                                                         sample_vocab) -> None:
    from spanbert.data import build

    meta = build(str(sample_corpus["kowiki"]), str(tmp_path / "store"), 64, str(sample_vocab), workers=1,
                 extra=str(sample_corpus["train"]), test_path=str(sample_corpus["test"]))
    n_reviews = meta["n_review_instances"]
    assert 0 < n_reviews < meta["n_instances"] and meta["n_articles"] > 0
    store = TokenStore(tmp_path / "store")
    cfg = ModelConfig(**{**CFG.to_dict(), "n_seq": 64, "n_vocab": int(meta["vocab_size"])})
    data = PretrainingDataset(store, cfg)
    first = data.instance(0)
    assert first[0] == CLS_ID and first[-1] == SEP_ID and (first == SEP_ID).sum() > 1  # several reviews
    torch.manual_seed(0)
    batch = data.collate(np.arange(n_reviews))
    for i in range(n_reviews):  # no masked span holds a [SEP]: each stays inside one review
        keep = batch["mlm_labels"][i] != PAD_ID
        assert (batch["mlm_labels"][i][keep] != SEP_ID).all()
        left, right = batch["span_left"][i][keep], batch["span_right"][i][keep]
        sep = torch.from_numpy(data.instance(i) == SEP_ID).nonzero().flatten()
        assert not ((sep[None, :] > left[:, None]) & (sep[None, :] < right[:, None])).any()


def test_vocab_heads_start_at_the_log_unigram_of_the_training_instances(dataset: PretrainingDataset) -> None:
    """MLM and SBO biases both start at the add-one-smoothed log frequencies of the training instances'
    tokens: specials ([CLS], [SEP]; never targets) and the held-out tail not counted. (pretrain.py calls it
    on a fresh run, not a resumed one; tests/test_fixed_seed.py locks the losses that follow.)"""
    from bert.pretrain import init_vocab_heads
    from common.pretrain import Subset, heldout_split
    train, heldout = heldout_split(len(dataset), 0.1)
    model = SpanBertForPreTraining(CFG)
    init_vocab_heads(model, Subset(dataset, train))
    counts = np.ones(N_VOCAB)
    for i in train:
        ids = dataset.instance(i)
        np.add.at(counts, ids[ids >= N_SPECIAL], 1)
    expected = torch.tensor(counts / counts.sum(), dtype=torch.float32)
    held_out_only = set(np.concatenate([dataset.instance(i) for i in heldout])) - set(
        np.concatenate([dataset.instance(i) for i in train]))
    assert held_out_only  # the check below would not see the tail counted otherwise
    for head in (model.mlm_head, model.sbo_head):
        torch.testing.assert_close(head.bias.exp(), expected)
    assert float(model.mlm_head.bias[CLS_ID]) == pytest.approx(float(np.log(1 / counts.sum())))
