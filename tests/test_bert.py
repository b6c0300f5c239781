"""BERT: NSP pairs, the pretraining batches, the losses, the encoder's padding and
bidirectionality, and a tiny data.py -> pretrain.py -> train.py chain on the sample corpus."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bert.data import NO_NSP, build, corpus_pairs, split_sentences, truncate_pair
from bert.model import BertForPreTraining, BertForSequenceClassification, BertModel, MLMHead, masked_lm_loss
from bert.pretrain import PretrainingDataset
from bert.train import wrap
from common.checkpoint import load_checkpoint
from common.cli import REPO_ROOT, UserError
from common.config import ModelConfig
from common.device import Runtime
from common.evaluation import evaluate
from common.losses import IGNORE
from common.prep import packed_reviews
from common.token_store import TokenStore
from common.vocab import CLS_ID, N_SPECIAL, PAD_ID, SEP_ID

CFG = ModelConfig(n_layer=2, d_hidn=32, n_head=4, d_ff=64, n_seq=48, n_segment=2, dropout=0.0, n_vocab=60)
TINY_CONFIG = {"n_layer": 2, "d_hidn": 64, "n_head": 4, "d_ff": 128, "n_seq": 64, "n_segment": 2, "dropout": 0.1}


# --- sample corpus, written once for the module ---------------------------------------------

@pytest.fixture(scope="module")
def sample(tmp_path_factory, sample_corpus: dict[str, Path], sample_vocab: Path) -> dict[str, Path]:
    """The sample corpus files (conftest's `sample_corpus`), a tiny config and the sample vocab."""
    folder = tmp_path_factory.mktemp("bert_sample")
    (folder / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    return {**sample_corpus, "folder": folder, "config": folder / "tiny.json", "vocab": sample_vocab}


@pytest.fixture(scope="module")
def store(sample: dict[str, Path]) -> TokenStore:
    out = sample["folder"] / "store"
    build(str(sample["kowiki"]), str(out), 64, str(sample["vocab"]), workers=1)
    return TokenStore(out)


# --- next sentence prediction pairs -----------------------------------------------------------

ARTICLE_STRIDE = 1000


def synthetic_articles(n: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Article k's tokens are k * 1000 + their position in it, so a token tells where it came from."""
    rng = np.random.default_rng(seed)
    articles = []
    for k in range(n):
        lengths = rng.integers(3, 13, size=rng.integers(2, 15))
        ids = (k + 1) * ARTICLE_STRIDE + np.arange(lengths.sum())
        articles.append(np.split(ids, np.cumsum(lengths)[:-1]))
    return articles


def test_nsp_pairs_are_adjacent_text_or_from_another_article() -> None:
    max_tokens = 30
    pairs = list(corpus_pairs(synthetic_articles(200), max_tokens, 0.1, np.random.default_rng(0), buffer_size=20))
    labels = [label for _, _, label in pairs]
    assert 0.3 < np.mean(labels) < 0.7
    for a, b, is_next in pairs:
        assert 1 <= len(a) and 1 <= len(b) and len(a) + len(b) <= max_tokens
        assert (np.diff(a) == 1).all() and (np.diff(b) == 1).all()  # contiguous text
        article_a, article_b = a[0] // ARTICLE_STRIDE, b[0] // ARTICLE_STRIDE
        if is_next:
            # B is the text that follows A in the same article (the pair was truncated at most
            # by the overshoot of its last sentence, 12 tokens at most)
            assert article_a == article_b
            assert 0 <= b[0] - a[-1] - 1 <= 12
        else:
            assert article_a != article_b
            assert abs(int(article_a) - int(article_b)) <= 20  # from the bounded buffer


def test_every_article_gets_pairs_even_the_first_and_last() -> None:
    articles = synthetic_articles(3, seed=1)
    pairs = list(corpus_pairs(articles, 30, 0.0, np.random.default_rng(0), buffer_size=2))
    assert {a[0] // ARTICLE_STRIDE for a, _, _ in pairs} == {1, 2, 3}
    with pytest.raises(UserError, match="two"):
        list(corpus_pairs(articles[:1], 30, 0.0, np.random.default_rng(0), buffer_size=2))


def test_truncate_pair_shortens_the_longer_side() -> None:
    a, b = truncate_pair(np.arange(20), np.arange(100, 105), 15, np.random.default_rng(0))
    assert len(a) == 10 and len(b) == 5 and (np.diff(a) == 1).all()


def test_sentences_split_after_final_punctuation_before_a_new_word() -> None:
    sentence_end = np.zeros(20, dtype=bool)
    sentence_end[9] = True  # e.g. "다."
    word_starts = np.zeros(20, dtype=bool)
    word_starts[[7, 8]] = True
    parts = split_sentences([7, 10, 9, 8, 11, 9, 10, 9], sentence_end, word_starts)
    # 9 followed by 10 (no word start, e.g. "3.5") does not end a sentence
    assert [p.tolist() for p in parts] == [[7, 10, 9], [8, 11, 9, 10, 9]]


# --- pretraining batches ------------------------------------------------------------------------

def test_pretraining_batch_layout(store: TokenStore, sample: dict[str, Path]) -> None:
    cfg = ModelConfig(**TINY_CONFIG).with_vocab(int(store.meta["vocab_size"]))
    data = PretrainingDataset(store, cfg)
    indices = np.arange(min(len(data), 32))
    torch.manual_seed(0)
    batch = data.collate(indices)
    ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    assert ids.shape[1] <= 64
    for row, i in enumerate(indices):
        original = torch.from_numpy(data.instance(i))
        n, len_a = len(original), int(data.len_a[i])
        assert mask[row, :n].all() and not mask[row, n:].any() and (ids[row, n:] == PAD_ID).all()
        # [CLS] A [SEP] is segment 0, B [SEP] segment 1, padding 0
        assert original[0] == CLS_ID and original[len_a - 1] == SEP_ID and original[n - 1] == SEP_ID
        assert (types[row, :len_a] == 0).all() and (types[row, len_a:n] == 1).all() and (types[row, n:] == 0).all()
        # masked positions hold the original token as label; special tokens are never masked
        keep = batch["mlm_labels"][row] != PAD_ID
        positions, labels = batch["mlm_positions"][row][keep], batch["mlm_labels"][row][keep]
        assert len(positions) >= 1 and (original[positions] == labels).all() and (labels >= N_SPECIAL).all()
        unmasked = torch.ones(n, dtype=torch.bool)
        unmasked[positions] = False
        assert (ids[row, :n][unmasked] == original[unmasked]).all()
    assert set(batch["nsp_labels"].tolist()) <= {0, 1}


def test_masks_are_dynamic_but_follow_the_torch_rng(store: TokenStore) -> None:
    cfg = ModelConfig(**TINY_CONFIG).with_vocab(int(store.meta["vocab_size"]))
    data = PretrainingDataset(store, cfg)
    indices = np.arange(8)
    torch.manual_seed(3)
    first, second = data.collate(indices), data.collate(indices)
    torch.manual_seed(3)  # what a resumed run does: the trainer restores the checkpointed RNG
    again = data.collate(indices)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["mlm_positions"], second["mlm_positions"])


def test_pretraining_step_compiles_to_one_graph(store: TokenStore) -> None:
    """torch.compile traces the whole loss without a graph break: the masked slots are scored at a
    fixed (B, M) layout (unused ones IGNORE) and the attention mask is not checked for padding."""
    cfg = ModelConfig(**TINY_CONFIG).with_vocab(int(store.meta["vocab_size"]))
    model = BertForPreTraining(cfg)
    torch.manual_seed(0)
    dataset = PretrainingDataset(store, cfg)
    by_length = np.argsort(np.diff(store["offsets"]), kind="stable")  # the shortest pairs, the middle, the longest
    batches = [dataset.collate(by_length[i:i + 8]) for i in (0, len(by_length) // 2, len(by_length) - 8)]
    # unpadded, they would differ in length or masked count (the longest of each batch)
    widths = {(int(b["attention_mask"].sum(1).max()), int((b["mlm_labels"] != PAD_ID).sum(1).max())) for b in batches}
    assert len(widths) > 1 and {tuple(b["mlm_positions"].shape) for b in batches} == {(8, dataset.slots)}
    explanation = torch._dynamo.explain(model)(**batches[0])
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    # batches of other lengths and masked counts reuse the graph: (B, n_seq) tokens, (B, slots) slots
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(model, backend=counter)
    for batch in batches:
        compiled(**batch)
    assert counter.frame_count == 1


def test_store_longer_than_the_config_is_a_clear_error(store: TokenStore) -> None:
    cfg = ModelConfig(**{**TINY_CONFIG, "n_seq": 32}).with_vocab(int(store.meta["vocab_size"]))
    with pytest.raises(UserError, match="--n_seq 64 but the config allows 32"):
        PretrainingDataset(store, cfg)


# --- model ---------------------------------------------------------------------------------------

SEQS = [wrap([10, 11, 12, 13, 14, 15, 16, 17], CFG.n_seq), wrap([20, 21], CFG.n_seq), wrap([30, 31, 32, 33], CFG.n_seq)]


def test_pooled_output_ignores_padding(padded) -> None:
    torch.manual_seed(0)
    model = BertModel(CFG).eval()
    ids, mask = padded(SEQS)
    with torch.no_grad():
        hidden, pooled = model(ids, mask)
        for i, s in enumerate(SEQS):
            h_alone, p_alone = model(torch.tensor([s]))
            torch.testing.assert_close(pooled[i], p_alone[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(hidden[i, : len(s)], h_alone[0], atol=1e-5, rtol=1e-5)


def test_classifier_logits_ignore_padding(padded) -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(CFG).eval()
    ids, mask = padded(SEQS)
    with torch.no_grad():
        logits = model.classify(ids, mask)[0]
        alone = torch.cat([model.classify(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in SEQS])
    torch.testing.assert_close(logits, alone, atol=1e-5, rtol=1e-5)


def test_encoder_is_bidirectional() -> None:
    torch.manual_seed(0)
    model = BertModel(CFG).eval()
    ids = torch.tensor([[CLS_ID, 10, 11, 12, 13, SEP_ID]])
    changed = ids.clone()
    changed[0, 4] = 20  # a later token
    with torch.no_grad():
        before, after = model(ids)[0], model(changed)[0]
    assert not torch.allclose(before[0, :4], after[0, :4], atol=1e-4)  # earlier positions see it


def test_mlm_loss_counts_only_masked_positions() -> None:
    torch.manual_seed(0)
    head = MLMHead(CFG, torch.nn.Embedding(CFG.n_vocab, CFG.d_hidn))
    hidden = torch.randn(2, 6, CFG.d_hidn)
    positions = torch.tensor([[1, 3, 0], [2, 0, 0]])
    labels = torch.tensor([[15, 16, PAD_ID], [17, PAD_ID, PAD_ID]])  # [PAD] = an unused slot
    loss, metrics = masked_lm_loss(head, hidden, positions, labels)
    expected = F.cross_entropy(head(torch.stack([hidden[0, 1], hidden[0, 3], hidden[1, 2]])), torch.tensor([15, 16, 17]))
    torch.testing.assert_close(loss, expected)
    assert metrics["mlm_loss"][1] == 3
    other = hidden.clone()
    other[0, [0, 2, 4, 5]] = torch.randn(4, CFG.d_hidn)  # everything that is not masked
    other[1, [0, 1, 3]] = torch.randn(3, CFG.d_hidn)
    torch.testing.assert_close(masked_lm_loss(head, other, positions, labels)[0], loss)
    other[0, 3] += 1.0  # a masked position does count
    assert not torch.allclose(masked_lm_loss(head, other, positions, labels)[0], loss)


def test_pretraining_loss_is_mlm_plus_nsp_and_the_head_is_tied(padded) -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(CFG)
    assert model.mlm_head.token_embedding.weight is model.trunk.token_embedding.weight
    ids, mask = padded([[CLS_ID, 10, 11, SEP_ID, 12, 13, SEP_ID], [CLS_ID, 20, SEP_ID, 21, SEP_ID]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]])
    loss, m = model(ids, mask, types, mlm_positions=torch.tensor([[1, 4], [3, 0]]),
                    mlm_labels=torch.tensor([[10, 12], [21, 0]]), nsp_labels=torch.tensor([1, 0]))
    assert set(m) == {"loss", "mlm_loss", "mlm_acc", "nsp_loss", "nsp_acc", "nsp_next"}
    mean = {k: float(s) / float(c) for k, (s, c) in m.items()}
    assert mean["loss"] == pytest.approx(mean["mlm_loss"] + mean["nsp_loss"], rel=1e-5)
    loss.backward()
    assert model.nsp_head.weight.grad is not None


def test_wrap_is_cls_review_sep_within_n_seq() -> None:
    assert wrap([10, 11], 8) == [CLS_ID, 10, 11, SEP_ID]
    assert wrap(list(range(10, 30)), 8) == [CLS_ID, 10, 11, 12, 13, 14, 15, SEP_ID]


# --- the scripts, end to end ------------------------------------------------------------------------

def test_data_pretrain_train_chain(sample: dict[str, Path], tmp_path: Path) -> None:
    """data.py -> pretrain.py -> train.py on the sample corpus with a tiny config; the classifier beats chance."""
    s = {k: str(v) for k, v in sample.items()}
    common = f"--vocab {s['vocab']} --config {s['config']}"
    script = (
        f"python data.py --input {s['kowiki']} --output {tmp_path}/store --n_seq 64 --vocab {s['vocab']} --workers 1"
        f" && python pretrain.py --input {tmp_path}/store {common} --save {tmp_path}/pre.pth --epoch 1"
        f" --batch 16 --lr 1e-3 --max_steps 8 --heldout 0.05"
        f" && python train.py --train {s['train']} --test {s['test']} {common} --pretrain {tmp_path}/pre.pth"
        f" --save {tmp_path}/best.pth --results {tmp_path}/results.csv --epoch 3 --batch 16 --lr 2e-3"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT / "bert", env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "held-out" in run.stdout and "nsp loss" in run.stdout
    heldout = json.loads((tmp_path / "pre.log.json").read_text())[-1]
    assert {"heldout_mlm_acc", "heldout_nsp_acc"} <= set(heldout)
    state = load_checkpoint(tmp_path / "best.pth")
    assert state["kind"] == "bert-classifier" and state["pretrained"].startswith("pre.pth")
    result = (tmp_path / "results.csv").read_text().splitlines()
    test_acc = float(dict(zip(result[0].split(","), result[1].split(",")))["test_acc"])
    assert test_acc > 0.6, run.stdout[-2000:]


# --- the NSMC review text (task-adaptive pretraining) ---------------------------------------------

def test_reviews_are_packed_into_mlm_only_instances() -> None:
    reviews = [[10, 11], [12], [13, 14, 15], list(range(20, 30))]
    packed = [x.tolist() for x in packed_reviews(reviews, 7)]
    assert packed == [[CLS_ID, 10, 11, SEP_ID, 12, SEP_ID],  # [13, 14, 15] would make 10 > 7 tokens
                      [CLS_ID, 13, 14, 15, SEP_ID],
                      [CLS_ID, 20, 21, 22, 23, 24, SEP_ID]]  # a review longer than n_seq - 2 is cut
    assert [x.tolist() for x in packed_reviews([], 7)] == []


def test_store_with_review_text(sample: dict[str, Path], tmp_path: Path) -> None:
    """Reviews first (MLM-only, segment A, NO_NSP), then the articles' pairs; --input none: reviews alone."""
    both = build(str(sample["kowiki"]), str(tmp_path / "both"), 64, str(sample["vocab"]), workers=1,
                 extra=str(sample["train"]), test_path=str(sample["test"]))
    store = TokenStore(tmp_path / "both")
    n_reviews = both["n_review_instances"]
    assert 0 < n_reviews < both["n_instances"] and both["extra"] == Path(sample["train"]).name
    is_next, len_a, offsets = store["is_next"], store["len_a"], store["offsets"]
    assert (is_next[:n_reviews] == NO_NSP).all() and set(is_next[n_reviews:].tolist()) <= {0, 1}
    assert (len_a[:n_reviews] == np.diff(offsets)[:n_reviews]).all()  # one segment: all of it is A
    alone = build("none", str(tmp_path / "alone"), 64, str(sample["vocab"]), workers=1,
                  extra=str(sample["train"]), test_path=str(sample["test"]))
    assert alone["n_instances"] == alone["n_review_instances"] == n_reviews and alone["n_articles"] == 0
    # evaluated on reviews alone, NSP has no target: its metrics are left out, not NaN, and the log stays strict JSON
    cfg = ModelConfig(**TINY_CONFIG).with_vocab(int(store.meta["vocab_size"]))
    torch.manual_seed(0)
    metrics = evaluate(BertForPreTraining(cfg), PretrainingDataset(TokenStore(tmp_path / "alone"), cfg), 8,
                       Runtime(torch.device("cpu")))
    assert {"loss", "mlm_loss", "mlm_acc"} <= set(metrics) and not any(k.startswith("nsp") for k in metrics)
    json.dumps(metrics, allow_nan=False)
    # in a batch, packed reviews are segment 0 throughout and take no part in NSP
    batch = PretrainingDataset(store, cfg).collate(np.arange(n_reviews - 2, n_reviews + 2))
    assert batch["nsp_labels"][:2].tolist() == [IGNORE, IGNORE] and set(batch["nsp_labels"][2:].tolist()) <= {0, 1}
    assert (batch["token_type_ids"][:2] == 0).all()
    with pytest.raises(UserError, match="--input none leaves nothing"):
        build("none", str(tmp_path / "nothing"), 64, str(sample["vocab"]), workers=1)


def test_nsp_loss_skips_instances_without_a_pair(padded) -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(CFG).eval()
    ids, mask = padded([[CLS_ID, 10, SEP_ID, 11, SEP_ID], [CLS_ID, 12, SEP_ID, 13, SEP_ID], [CLS_ID, 14, SEP_ID]])
    types = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    positions, labels = torch.tensor([[1], [1], [1]]), torch.tensor([[10], [12], [14]])
    _, m = model(ids, mask, types, positions, labels, nsp_labels=torch.tensor([1, IGNORE, 0]))
    pooled = model.trunk(ids, mask, types)[1]
    expected = F.cross_entropy(model.nsp_head(pooled)[[0, 2]], torch.tensor([1, 0]), reduction="sum")
    assert float(m["nsp_loss"][0]) == pytest.approx(float(expected.detach()), rel=1e-5) and int(m["nsp_loss"][1]) == 2
    assert (int(m["nsp_next"][0]), int(m["nsp_next"][1])) == (1, 2)  # a constant guess scores max(0.5, 0.5)
    # no pair at all: NSP adds nothing to the loss, which stays the MLM loss
    loss, m = model(ids, mask, types, positions, labels, nsp_labels=torch.full((3,), IGNORE))
    assert int(m["nsp_loss"][1]) == 0 and float(loss) == pytest.approx(float(m["mlm_loss"][0]) / 3, rel=1e-5)


def test_heldout_articles_are_paired_apart_from_the_training_ones() -> None:
    """The last --heldout of the articles come last and draw their random B among themselves only; a
    training pair never draws one from them (the held-out MLM/NSP figures are on unseen text)."""
    from bert.data import corpus_pairs_held_out, heldout_article_count
    n_articles = 60
    n_heldout = heldout_article_count(n_articles, 0.05)
    assert n_heldout == 3 and heldout_article_count(n_articles, 0.001) == 2  # at least two: B needs another
    assert heldout_article_count(3, 0.5) == 0 and heldout_article_count(n_articles, 0.0) == 0
    pairs = list(corpus_pairs_held_out(synthetic_articles(n_articles), n_articles, n_heldout, 30, 0.1,
                                       np.random.default_rng(0), buffer_size=1000))
    flags = [is_heldout for _, is_heldout in pairs]
    assert flags == sorted(flags) and 0 < sum(flags) < len(flags)  # the held-out pairs form the tail
    first_heldout = n_articles - n_heldout + 1  # articles are numbered from 1
    for (a, b, _), is_heldout in pairs:
        articles = {int(a[0]) // ARTICLE_STRIDE, int(b[0]) // ARTICLE_STRIDE}
        assert all((k >= first_heldout) == is_heldout for k in articles), (articles, is_heldout)
    # both kinds of pair among the held-out ones, so the held-out NSP accuracy has both classes
    assert {label for (_, _, label), is_heldout in pairs if is_heldout} == {0, 1}


def test_store_declares_its_heldout_articles_and_pretraining_holds_them_out(store: TokenStore) -> None:
    from common.pretrain import heldout_split
    n_heldout = int(store.meta["heldout_instances"])
    assert store.meta["heldout_articles"] == 2 and 0 < n_heldout < store.meta["n_instances"] // 4
    train, heldout = heldout_split(store.meta["n_instances"], 0.5, n_heldout)  # the store's count wins
    assert len(heldout) == n_heldout and heldout[0] == len(train) and heldout[-1] == store.meta["n_instances"] - 1
