"""GPT: generation with the KV cache, sampling filters, the classifier and its losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.config import ModelConfig
from common.layers import LMHead
from common.pretrain import Subset, heldout_split
from common.token_store import StoreWriter, TokenStore, token_counts
from common.vocab import BOS_ID, EOS_ID, PAD_ID
from gpt.generate import filter_logits, generate, generate_batch, pick
from gpt.model import GPTForSequenceClassification, GPTLMHeadModel, lm_loss
from gpt.pretrain import WindowDataset, init_lm_bias
from gpt.train import wrap

CFG = ModelConfig(n_layer=2, d_hidn=32, n_head=4, d_ff=64, n_seq=48, dropout=0.0, n_vocab=60)


def lm_model(scale: float = 1.0) -> GPTLMHeadModel:
    torch.manual_seed(0)
    model = GPTLMHeadModel(CFG).eval()
    with torch.no_grad():  # scale > 1: weights far from init, so the next token depends on the context
        for p in model.parameters():
            p.mul_(scale)
    return model


def classifier(lm: float = 0.0) -> GPTForSequenceClassification:
    torch.manual_seed(0)
    return GPTForSequenceClassification(CFG, lm_coef=lm).eval()


SAMPLINGS = [dict(temperature=0.0), dict(top_k=5), dict(top_k=0, top_p=0.8)]
PROMPTS = [[BOS_ID, 10, 11, 12], [BOS_ID, 20], [BOS_ID, 30, 31, 32, 33, 34, 35], [BOS_ID, 40, 41]]


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_kv_cache_generation_equals_recomputation(sampling: dict) -> None:
    model = lm_model()
    prompt = [BOS_ID, 10, 11, 12]
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(3)
        runs.append(generate(model, prompt, 30, use_cache=use_cache, generator=g, stop_at_eos=False, **sampling))
    assert runs[0] == runs[1] and len(runs[0]) == 30


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_batched_kv_cache_generation_equals_each_prompt_recomputed_alone(sampling: dict) -> None:
    """Prompts of different lengths, left-padded in one cache: each row's tokens are those of the
    recompute reference, which runs every prompt alone (no padding, no cache); greedy, and sampled
    from the same noise."""
    model = lm_model(scale=20.0)
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(5)
        runs.append(generate_batch(model, PROMPTS, 30, use_cache=use_cache, generator=g, stop_at_eos=False, **sampling))
    assert runs[0] == runs[1] and [len(r) for r in runs[0]] == [30] * len(PROMPTS)
    if sampling.get("temperature") == 0:  # greedy: a row alone decodes the same tokens as in the batch
        assert [generate(model, p, 30, temperature=0.0, stop_at_eos=False) for p in PROMPTS] == runs[0]
    assert len({tuple(r) for r in runs[0]}) > 1  # the rows are not one row repeated


def test_compiled_decode_step_generates_the_recomputed_tokens() -> None:
    pytest.importorskip("torch._inductor")
    model = lm_model()
    compiled = generate_batch(model, PROMPTS[:2], 12, temperature=0.0, stop_at_eos=False, compile=True)
    assert compiled == generate_batch(model, PROMPTS[:2], 12, temperature=0.0, use_cache=False, stop_at_eos=False)


def test_seeded_sampling_is_reproducible_and_the_seed_matters() -> None:
    model = lm_model()

    def sample(seed: int) -> list[list[int]]:
        return generate_batch(model, PROMPTS, 20, top_k=10, generator=torch.Generator().manual_seed(seed),
                              stop_at_eos=False)

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_generation_stops_each_row_at_its_eos() -> None:
    """A row ends with its first [EOS]; the others go on to max_len."""
    model = lm_model()
    with torch.no_grad():
        model.lm_head.bias[EOS_ID] = 30.0  # [EOS] always wins...
    assert generate_batch(model, PROMPTS[:2], 10, temperature=0.0) == [[EOS_ID], [EOS_ID]]
    with torch.no_grad():
        model.lm_head.bias[EOS_ID] = -30.0  # ...never wins
    out = generate_batch(model, PROMPTS[:2], 10, temperature=0.0)
    assert [len(r) for r in out] == [10, 10] and EOS_ID not in out[0] + out[1]


def test_sampling_follows_the_filtered_distribution() -> None:
    """The exponential race argmax(p / Exponential(1)) samples p: frequencies over many rows match,
    and tokens filtered out by top_k never come up."""
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).repeat(20000, 1)
    noise = torch.empty(20000, 3).exponential_(generator=torch.Generator().manual_seed(0))  # top_k: k draws a row
    counts = torch.bincount(pick(logits, 1.0, 3, 0.0, noise), minlength=5).float()
    expected = logits[0, :3].softmax(-1)
    assert counts[3:].sum() == 0
    torch.testing.assert_close(counts[:3] / counts.sum(), expected, atol=0.015, rtol=0)


def test_cached_logits_equal_full_logits() -> None:
    from common.layers import KVCache

    model = lm_model()
    ids = torch.tensor([[BOS_ID, 9, 8, 7, 6, 5, 4]])
    slots = torch.arange(10)
    with torch.no_grad():
        full = model.logits(ids)
        cache = KVCache.empty(CFG, torch.zeros(1, dtype=torch.long), 10, torch.float32)
        steps = [model.logits(ids[:, :3], cache, slots[:3])] + [model.logits(ids[:, t : t + 1], cache, slots[t : t + 1])
                                                                  for t in range(3, 7)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_top_k_keeps_exactly_the_k_largest() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]
    assert torch.isfinite(filter_logits(logits, top_k=10)).all()


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.1, 0.05]])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.75)).tolist() == [[False, True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.85)).tolist() == [[False, True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).sum() == 1  # the top token always stays


def test_top_k_and_top_p_are_exclusive() -> None:
    with pytest.raises(ValueError, match="exclusive"):
        filter_logits(torch.zeros(1, 4), top_k=2, top_p=0.5)


def batch_of(reviews: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    seqs = [wrap(r, CFG.n_seq) for r in reviews]
    T = max(map(len, seqs))
    ids = torch.full((len(seqs), T), PAD_ID)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, (ids != PAD_ID).long()


REVIEWS = [[10, 11, 12, 13, 14, 15, 16, 17], [20, 21], [30, 31, 32, 33]]


def test_classifier_reads_the_last_real_token() -> None:
    model = classifier()
    ids, mask = batch_of(REVIEWS)
    with torch.no_grad():
        batch_logits, _ = model.classify(ids, mask)
        for i, r in enumerate(REVIEWS):
            alone_ids, alone_mask = batch_of([r])
            torch.testing.assert_close(batch_logits[i], model.classify(alone_ids, alone_mask)[0][0], atol=1e-5, rtol=1e-5)
    # the classified position is [EOS], not a pad: changing the token before [EOS] changes the logits
    changed = ids.clone()
    changed[1, 2] = 40
    with torch.no_grad():
        assert not torch.allclose(model.classify(changed, mask)[0][1], batch_logits[1])


def test_wrap_fits_n_seq_and_ends_with_eos() -> None:
    assert wrap(list(range(10, 100)), 16) == [BOS_ID, *range(10, 24), EOS_ID]


def test_lm_coefficient_composes_the_loss() -> None:
    ids, mask = batch_of(REVIEWS)
    labels = torch.tensor([1, 0, 1])
    loss0, m0 = classifier(0.0)(ids, mask, labels)
    loss5, m5 = classifier(0.5)(ids, mask, labels)
    assert "lm_loss" not in m0 and "lm_loss" in m5
    lm_mean = m5["lm_loss"][0] / m5["lm_loss"][1]
    torch.testing.assert_close(loss5, loss0 + 0.5 * lm_mean)
    # the LM targets are exactly the next real tokens: pads and the position after [EOS] are never targets
    assert m5["lm_loss"][1] == int(mask.sum()) - len(REVIEWS)


def test_lm_loss_matches_plain_cross_entropy_on_real_targets() -> None:
    torch.manual_seed(1)
    cfg = ModelConfig(n_layer=1, d_hidn=8, n_head=2, d_ff=16, n_seq=8, dropout=0.0, n_vocab=12)
    head = LMHead(cfg, torch.nn.Embedding(12, 8), transform=False)
    hidden = torch.randn(2, 5, 8)
    targets = torch.tensor([[3, 4, 5, PAD_ID, PAD_ID], [6, 7, 8, 9, 10]])
    loss, metrics = lm_loss(head, hidden, targets)
    keep = targets != PAD_ID
    torch.testing.assert_close(loss, F.cross_entropy(head(hidden[keep]), targets[keep]))
    assert metrics["loss"][1] == 8


def test_token_counts_is_bincount_in_chunks() -> None:
    tokens = np.random.default_rng(0).integers(0, 50, 1000).astype(np.uint16)
    np.testing.assert_array_equal(token_counts(tokens, 60, chunk=7), np.bincount(tokens, minlength=60))
    with pytest.raises(ValueError, match="outside the vocab"):
        token_counts(tokens, 40)


def test_lm_bias_starts_at_the_log_unigram_of_the_training_windows(tmp_path) -> None:
    """Train windows hold ids 5 and 6, the held-out window only id 9: the bias counts the former only."""
    cfg = ModelConfig(n_layer=1, d_hidn=8, n_head=2, d_ff=16, n_seq=4, dropout=0.0, n_vocab=12)
    tokens = np.array([5, 5, 6, 5, 6, 5, 5, 5, 9, 9, 9, 9, 9], dtype=np.uint16)  # 3 windows of 4 (+1 target)
    with StoreWriter(tmp_path / "store", {"n_seq": 4, "vocab_fingerprint": "x"}) as w:
        w.append("tokens", tokens)
    windows = WindowDataset(TokenStore(tmp_path / "store"), cfg)
    train, heldout = heldout_split(len(windows), 0.34)
    assert list(heldout) == [2]
    model = GPTLMHeadModel(cfg)
    init_lm_bias(model, Subset(windows, train))
    counts = np.ones(12)
    counts[5] += 6
    counts[6] += 2  # add-one smoothing: 8 training tokens + 12
    expected = torch.tensor(counts / counts.sum(), dtype=torch.float32)
    torch.testing.assert_close(model.lm_head.bias.exp(), expected)
    # the untrained head at a zero hidden state predicts exactly the smoothed frequencies
    torch.testing.assert_close(model.lm_head(torch.zeros(1, 8)).softmax(-1)[0], expected)


def test_finetuning_carries_the_pretrained_lm_head_bias(tmp_path, sample_vocab) -> None:
    """--lm > 0 from a pretraining checkpoint: the classifier's LM head gets the pretrained bias, not zeros
    (a zero bias is the state that collapsed); at --lm 0 there is no LM head at all (nothing unused for DDP)."""
    from common.checkpoint import save_checkpoint
    from common.finetune import load_pretrained
    from common.vocab import load_vocab

    pretrained = lm_model()
    with torch.no_grad():
        pretrained.lm_head.bias.copy_(torch.randn(CFG.n_vocab))
    vocab = load_vocab(sample_vocab)
    save_checkpoint(tmp_path / "pre.pth", {"kind": "gpt-pretrain", "config": CFG.to_dict(), "model": pretrained.state_dict(),
                                           "vocab": {"fingerprint": vocab.fingerprint, "size": CFG.n_vocab}})
    with_lm = GPTForSequenceClassification(CFG, lm_coef=0.5)
    load_pretrained(with_lm, tmp_path / "pre.pth", CFG, vocab, str(sample_vocab))
    torch.testing.assert_close(with_lm.lm_head.bias, pretrained.lm_head.bias, atol=0, rtol=0)
    torch.testing.assert_close(with_lm.trunk.embeddings.token.weight, pretrained.trunk.embeddings.token.weight)
    assert with_lm.lm_head.token_embedding.weight is with_lm.trunk.embeddings.token.weight  # still tied

    without_lm = GPTForSequenceClassification(CFG, lm_coef=0.0)
    load_pretrained(without_lm, tmp_path / "pre.pth", CFG, vocab, str(sample_vocab))
    assert without_lm.lm_head is None and not any(n.startswith("lm_head") for n, _ in without_lm.named_parameters())
    with pytest.raises(ValueError):
        GPTForSequenceClassification(CFG, lm_coef=-0.5)


def test_classifier_checkpoint_replays_its_options(tmp_path, sample_vocab) -> None:
    """predict.py rebuilds the classifier with the options train.py stored in its checkpoint (a dict of the
    options dataclass's fields, as every version wrote it); a checkpoint without them gets the defaults."""
    from common.checkpoint import save_checkpoint
    from common.device import Runtime
    from common.finetune import Classifier, load_classifier
    from common.vocab import load_vocab
    from gpt.train import classifier as build
    from gpt.train import parse_args, wrap

    vocab = load_vocab(sample_vocab)
    meta = {"kind": "gpt-classifier", "config": CFG.to_dict(), "vocab": {"fingerprint": vocab.fingerprint, "size": CFG.n_vocab}}
    cpu = Runtime(torch.device("cpu"))
    trained = classifier(lm=0.5)
    save_checkpoint(tmp_path / "lm.pth", {**meta, "options": {"lm": 0.5}, "model": trained.state_dict()})
    spec = Classifier("gpt", wrap, build)
    model, cfg = load_classifier(spec, str(tmp_path / "lm.pth"), vocab, str(sample_vocab), cpu)
    assert cfg.to_dict() == CFG.to_dict() and model.lm_coef == 0.5 and model.lm_head is not None
    torch.testing.assert_close(model.lm_head.bias, trained.lm_head.bias, atol=0, rtol=0)

    save_checkpoint(tmp_path / "bare.pth", {**meta, "model": classifier().state_dict()})
    model, _ = load_classifier(spec, str(tmp_path / "bare.pth"), vocab, str(sample_vocab), cpu)
    assert model.lm_coef == parse_args([]).lm == 0.0 and model.lm_head is None


def test_scratch_lm_bias_starts_at_the_log_unigram_of_the_train_reviews() -> None:
    """From scratch with --lm > 0: the bias counts what the LM loss predicts, every token after [BOS]."""
    from common.nsmc import ReviewDataset
    from gpt.train import init_lm_bias as init_classifier_bias

    reviews = ReviewDataset([np.array([BOS_ID, 7, 7, 8, EOS_ID]), np.array([BOS_ID, 8, EOS_ID])], np.array([0, 1]))
    model = classifier(lm=0.5)
    init_classifier_bias(model, reviews)
    counts = np.ones(CFG.n_vocab)
    counts[7] += 2
    counts[8] += 2
    counts[EOS_ID] += 2
    torch.testing.assert_close(model.lm_head.bias.exp(), torch.tensor(counts / counts.sum(), dtype=torch.float32))
    init_classifier_bias(classifier(lm=0.0), reviews)  # no LM head: nothing to do


def test_review_text_in_the_pretraining_store_is_the_train_pool_only(tmp_path, sample_corpus, sample_vocab) -> None:
    """data.py --extra: exactly the non-dev reviews of the train file, as [BOS] review [EOS], in front of the
    articles; the dev split (which picks fine-tuning's epoch) is never in the pretraining text."""
    from common.nsmc import nsmc_split, read_nsmc_json
    from common.vocab import load_vocab
    from gpt.data import build

    rows = read_nsmc_json(sample_corpus["train"])
    pool, dev = nsmc_split(len(rows))
    vocab = load_vocab(sample_vocab)
    wrapped = [[BOS_ID, *ids, EOS_ID] for ids in vocab.encode_batch([rows[i]["document"] for i in pool]) if ids]
    expected = np.concatenate(wrapped)

    alone = build("none", str(tmp_path / "reviews"), 32, str(sample_vocab), 1, extra=str(sample_corpus["train"]),
                  test_path=str(sample_corpus["test"]))
    tokens = np.asarray(TokenStore(tmp_path / "reviews")["tokens"])
    np.testing.assert_array_equal(tokens, expected)
    assert alone["n_reviews"] == len(wrapped) and alone["n_articles"] == 0 and alone["extra"] == "ratings_train.json"
    dev_only = [ids for ids in vocab.encode_batch([rows[i]["document"] for i in dev]) if len(ids) > 3]
    text = tokens.tobytes()
    assert not any(np.asarray(ids, dtype=np.uint16).tobytes() in text for ids in dev_only[:10])

    mixed = build(str(sample_corpus["kowiki"]), str(tmp_path / "mixed"), 32, str(sample_vocab), 1,
                  extra=str(sample_corpus["train"]), test_path=str(sample_corpus["test"]))
    mixed_tokens = np.asarray(TokenStore(tmp_path / "mixed")["tokens"])
    np.testing.assert_array_equal(mixed_tokens[: len(expected)], expected)  # reviews first: held-out tail is kowiki
    assert mixed["n_articles"] > 0 and mixed["n_review_tokens"] == len(expected) < mixed["n_tokens"]


def test_pretraining_step_compiles_to_one_graph() -> None:
    """torch.compile traces GPT's loss without a graph break (no boolean index on the targets, no host
    sync), and batches of windows reuse the graph; so does the classifier's --lm loss over padded reviews."""
    model = GPTLMHeadModel(CFG)
    windows = torch.randint(7, CFG.n_vocab, (3, 4, CFG.n_seq + 1))
    batches = [{"input_ids": w[:, :-1], "labels": w[:, 1:]} for w in windows]
    batches[1]["labels"][0, -5:] = PAD_ID  # a window ending in padding: nothing to predict there
    explanation = torch._dynamo.explain(model)(**batches[0])
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(model, backend=counter)
    for batch in batches:
        compiled(**batch)
    assert counter.frame_count == 1
    classifier = GPTForSequenceClassification(CFG, lm_coef=0.5)
    ids = torch.tensor([wrap(list(range(10, 20)), CFG.n_seq), wrap(list(range(10, 14)) + [PAD_ID] * 6, CFG.n_seq)])
    explanation = torch._dynamo.explain(classifier)(ids, (ids != PAD_ID).long(), torch.tensor([0, 1]))
    assert explanation.graph_break_count == 0
