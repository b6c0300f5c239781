"""Hugging Face export / import (each model folder's export.py, common/export.py and
bert/export.py): the exported folder, loaded with `from_pretrained`, gives our
logits (max abs difference < 1e-4, float32, eval mode) on right-padded batches of
NSMC reviews, and its tokenizer gives our ids.

Every model is checked twice: with every parameter redrawn at random (biases and
LayerNorms included, so that no mapping hides behind a zero or a one) and after a
few optimizer steps of its own training loss from the usual initialization.
"""
from __future__ import annotations

import dataclasses
import runpy
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

transformers = pytest.importorskip("transformers")

from bert.export import SPEC as BERT_EXPORT  # noqa: E402
from bert.export import bert_hf_config, import_bert  # noqa: E402
from bert.model import BertModel  # noqa: E402
from bert.model import BertForPreTraining, BertForSequenceClassification  # noqa: E402
from bert.train import wrap as wrap_cls_sep  # noqa: E402
from common.checkpoint import save_checkpoint  # noqa: E402
from common.cli import UserError  # noqa: E402
from common.cli import REPO_ROOT, SAMPLE_DIR  # noqa: E402
from common.config import ModelConfig  # noqa: E402
from common.export import export_checkpoint, load_into, require_transformers  # noqa: E402
from common.layers import masked_mean  # noqa: E402
from common.nsmc import read_nsmc_tsv  # noqa: E402
from common.vocab import EOS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_PIECES, load_vocab, normalize_text  # noqa: E402
from gpt.export import LM_BIAS_FILE
from gpt.export import SPEC as GPT_EXPORT  # noqa: E402
from gpt.model import GPTForSequenceClassification, GPTLMHeadModel  # noqa: E402
from gpt.train import wrap as gpt_wrap  # noqa: E402
from spanbert.export import SPEC as SPANBERT_EXPORT  # noqa: E402
from spanbert.model import SpanBertForPreTraining, SpanBertForSequenceClassification  # noqa: E402

TOL = 1e-4
BERT_CFG = ModelConfig(n_layer=2, d_hidn=32, n_head=4, d_ff=64, n_seq=48, n_segment=2, dropout=0.1)
GPT_CFG = ModelConfig(n_layer=2, d_hidn=32, n_head=4, d_ff=128, n_seq=48, dropout=0.1)  # OpenAIGPT: d_ff = 4 d
WEIGHTS = ["random", "trained"]
EXPORTS = {spec.name: spec for spec in (GPT_EXPORT, BERT_EXPORT, SPANBERT_EXPORT)}  # by the model name in a kind


@pytest.fixture(scope="module")
def vocab(sample_vocab):
    return load_vocab(sample_vocab)


@pytest.fixture(scope="module")
def reviews() -> list[str]:
    rows, _ = read_nsmc_tsv(SAMPLE_DIR / "nsmc" / "ratings_test.txt")
    return [r["document"] for r in rows]


def pad(seqs: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Right-padded (ids, attention_mask), as common.nsmc.ReviewDataset.collate."""
    x = torch.full((len(seqs), max(map(len, seqs))), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
    return x, (x != PAD_ID).long()


def batches(vocab, reviews: list[str], wrap, n_seq: int, size: int = 16) -> list[tuple[Tensor, Tensor]]:
    ids = [wrap(x, n_seq) for x in vocab.encode_batch(reviews)]
    return [pad(ids[i : i + size]) for i in range(0, len(ids), size)]


def randomize(model: nn.Module) -> None:
    """Redraw every parameter (tied ones once): weights and biases N(0, 0.1), LayerNorm scales 1 + N(0, 0.1)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if ("norm" in name.lower() and name.endswith("weight")) else 0.0, 0.1)


def train_briefly(model: nn.Module, loss_fn, steps: int = 12, lr: float = 3e-3) -> None:
    """A few AdamW steps of the model's own loss (dropout on), so that the weights leave their init."""
    torch.manual_seed(2)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        loss = loss_fn(step)
        opt.zero_grad()
        loss.backward()
        opt.step()


def set_weights(model: nn.Module, weights: str, loss_fn) -> None:
    """The weights a parity test compares on ("random" or briefly trained), then eval mode."""
    if weights == "random":
        randomize(model)
    else:
        train_briefly(model, loss_fn)
    model.eval()


def export(model: nn.Module, kind: str, vocab, tmp_path: Path, options: dict | None = None) -> Path:
    """Save `model` as our checkpoint (as pretrain.py / train.py do), then export it."""
    ckpt, out = tmp_path / f"{kind}.pth", tmp_path / f"{kind}-hf"
    save_checkpoint(ckpt, {"kind": kind, "config": model.cfg.to_dict(), "options": options or {},
                           "vocab": {"fingerprint": vocab.fingerprint, "size": len(vocab)}, "model": model.state_dict()})
    export_checkpoint(EXPORTS[kind.rsplit("-", 1)[0]], ckpt, vocab.path, out)
    return out


def assert_close(ours: Tensor, theirs: Tensor) -> float:
    diff = float((ours - theirs).abs().max())
    assert diff < TOL, f"max abs difference {diff:.2e}"
    return diff


def mlm_pretrain_batch(x: Tensor, m: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mask one real token per row, not the first or last: (masked ids, positions (B, 1), labels (B, 1),
    the boundaries of that one-token span (B, 2))."""
    g = torch.Generator().manual_seed(step)
    lengths = m.sum(1)
    pos = 1 + (torch.rand(len(x), generator=g) * (lengths - 2).clamp_min(1)).long()
    rows = torch.arange(len(x))
    labels = x[rows, pos]
    masked = x.clone()
    masked[rows, pos] = MASK_ID
    return masked, pos[:, None], labels[:, None], torch.stack([pos - 1, pos + 1], 1)


# --- GPT ------------------------------------------------------------------------------

@pytest.mark.parametrize("weights", WEIGHTS)
def test_gpt_lm_parity(vocab, reviews, tmp_path, weights):
    data = batches(vocab, reviews, gpt_wrap, GPT_CFG.n_seq)
    model = GPTLMHeadModel(GPT_CFG.with_vocab(len(vocab)))

    def loss(step: int) -> Tensor:
        x, m = data[step % len(data)]
        return model(x[:, :-1], x[:, 1:].masked_fill(m[:, 1:] == 0, PAD_ID))[0]
    set_weights(model, weights, loss)
    out_dir = export(model, "gpt-pretrain", vocab, tmp_path)
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(out_dir).eval()
    bias = torch.load(out_dir / LM_BIAS_FILE, weights_only=True)["lm_head.bias"]  # OpenAIGPT's lm_head has none
    assert bias.abs().max() > 0  # a real bias: the test fails if it were dropped
    with torch.no_grad():
        for x, m in data[:3]:
            real = m.bool()  # causal + right padding: real positions never see the pads
            assert_close(model.logits(x)[real], hf(input_ids=x, attention_mask=m).logits[real] + bias)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_gpt_classifier_parity(vocab, reviews, tmp_path, weights):
    """OpenAIGPTForSequenceClassification classifies the last non-pad token: our [EOS]."""
    data = batches(vocab, reviews, gpt_wrap, GPT_CFG.n_seq)
    model = GPTForSequenceClassification(GPT_CFG.with_vocab(len(vocab)), lm_coef=0.5)

    def loss(step: int) -> Tensor:
        x, m = data[step % len(data)]
        return model(x, m, (x[:, 1] % 2))[0]  # any fixed labels will do
    set_weights(model, weights, loss)
    hf = transformers.OpenAIGPTForSequenceClassification.from_pretrained(
        export(model, "gpt-classifier", vocab, tmp_path, {"lm": 0.5})).eval()
    assert hf.config.pad_token_id == PAD_ID and hf.config.id2label[1] == "positive"
    with torch.no_grad():
        for x, m in data[:3]:
            lengths = m.sum(1)
            assert lengths.min() < x.size(1) and bool((x[torch.arange(len(x)), lengths - 1] == EOS_ID).all())
            assert_close(model.classify(x, m)[0], hf(input_ids=x, attention_mask=m).logits)


# --- BERT -----------------------------------------------------------------------------

def bert_pairs(vocab, reviews: list[str], n_seq: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """[CLS] A [SEP] B [SEP] of consecutive reviews, token types 0 then 1, right-padded."""
    ids = vocab.encode_batch(reviews)
    half = (n_seq - 3) // 2
    seqs, types = [], []
    for a, b in zip(ids[0::2], ids[1::2]):
        first = wrap_cls_sep(a[:half], n_seq)
        second = [*b[:half], SEP_ID]
        seqs.append(first + second)
        types.append([0] * len(first) + [1] * len(second))
    out = []
    for i in range(0, len(seqs), 16):
        x, m = pad(seqs[i : i + 16])
        t, _ = pad(types[i : i + 16])
        out.append((x, m, t))
    return out


@pytest.mark.parametrize("weights", WEIGHTS)
def test_bert_pretraining_parity(vocab, reviews, tmp_path, weights):
    """MLM logits at every real position; NSP logits with HF's row order (index 0 = B follows A)."""
    data = bert_pairs(vocab, reviews, BERT_CFG.n_seq)
    model = BertForPreTraining(BERT_CFG.with_vocab(len(vocab)))

    def loss(step: int) -> Tensor:
        x, m, t = data[step % len(data)]
        masked, pos, labels, _ = mlm_pretrain_batch(x, m, step)
        return model(masked, m, t, pos, labels, (x[:, 1] % 2))[0]
    set_weights(model, weights, loss)
    hf = transformers.BertForPreTraining.from_pretrained(export(model, "bert-pretrain", vocab, tmp_path)).eval()
    with torch.no_grad():
        for x, m, t in data[:3]:
            hidden, pooled = model.trunk(x, m, t)
            out = hf(input_ids=x, attention_mask=m, token_type_ids=t)
            real = m.bool()
            assert_close(model.mlm_head(hidden)[real], out.prediction_logits[real])
            assert_close(model.nsp_head(pooled)[:, [1, 0]], out.seq_relationship_logits)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_bert_classifier_parity(vocab, reviews, tmp_path, weights):
    data = batches(vocab, reviews, wrap_cls_sep, BERT_CFG.n_seq)
    model = BertForSequenceClassification(BERT_CFG.with_vocab(len(vocab)))
    set_weights(model, weights, lambda step: model(*data[step % len(data)], data[step % len(data)][0][:, 1] % 2)[0])
    hf = transformers.BertForSequenceClassification.from_pretrained(
        export(model, "bert-classifier", vocab, tmp_path)).eval()
    with torch.no_grad():
        for x, m in data[:3]:
            assert_close(model.classify(x, m)[0], hf(input_ids=x, attention_mask=m).logits)


# --- SpanBERT -------------------------------------------------------------------------

@pytest.mark.parametrize("weights", WEIGHTS)
def test_spanbert_pretrain_parity(vocab, reviews, tmp_path, weights):
    """Exported as BertModel (the SBO head has no HF class): hidden states at real positions, pooler."""
    data = batches(vocab, reviews, wrap_cls_sep, BERT_CFG.n_seq)
    model = SpanBertForPreTraining(BERT_CFG.with_vocab(len(vocab)))

    def loss(step: int) -> Tensor:
        x, m = data[step % len(data)]
        masked, pos, labels, bounds = mlm_pretrain_batch(x, m, step)  # one-token spans
        return model(masked, m, pos, labels, bounds[:, :1], bounds[:, 1:], torch.zeros_like(pos))[0]
    set_weights(model, weights, loss)
    out_dir = export(model, "spanbert-pretrain", vocab, tmp_path)
    hf = transformers.BertModel.from_pretrained(out_dir).eval()
    assert "SBO" in (out_dir / "README.md").read_text()  # the dropped head is said so
    with torch.no_grad():
        for x, m in data[:3]:
            hidden, pooled = model.trunk(x, m)
            out = hf(input_ids=x, attention_mask=m)
            assert_close(hidden[m.bool()], out.last_hidden_state[m.bool()])
            assert_close(pooled, out.pooler_output)


@pytest.mark.parametrize("logit", ["cls", "mean"])
def test_spanbert_classifier_parity(vocab, reviews, tmp_path, logit):
    """--logit cls -> BertForSequenceClassification; mean / max -> BertModel + classifier.pt."""
    data = batches(vocab, reviews, wrap_cls_sep, BERT_CFG.n_seq)
    model = SpanBertForSequenceClassification(BERT_CFG.with_vocab(len(vocab)), logit=logit)
    train_briefly(model, lambda step: model(*data[step % len(data)], data[step % len(data)][0][:, 1] % 2)[0])
    model.eval()
    out_dir = export(model, "spanbert-classifier", vocab, tmp_path, {"logit": logit})
    with torch.no_grad():
        x, m = data[0]
        ours = model.classify(x, m)[0]
        if logit == "cls":
            hf = transformers.BertForSequenceClassification.from_pretrained(out_dir).eval()
            assert_close(ours, hf(input_ids=x, attention_mask=m).logits)
        else:
            hf = transformers.BertModel.from_pretrained(out_dir).eval()
            head = torch.load(out_dir / "classifier.pt", weights_only=True)
            features = masked_mean(hf(input_ids=x, attention_mask=m).last_hidden_state, m)
            assert_close(ours, features @ head["classifier.weight"].T + head["classifier.bias"])


# --- tokenizer ------------------------------------------------------------------------

def test_tokenizer_gives_our_ids(vocab, reviews, tmp_path):
    """[CLS] review [SEP] (BERT) / [BOS] review [EOS] (GPT classifier), padding and truncation
    included, on raw and on messy text (NFD, tabs, runs of spaces), special pieces at ids 0-6."""
    messy = ["  " + unicodedata.normalize("NFD", r).replace(" ", " \t  ") + "\n" for r in reviews[:20]]
    messy += ["", "ㅋㅋㅋㅋ 😀 \u3000 𝒳 ÿ", "재밌다" * 100]  # empty, byte fallback, truncation
    for model, kind, wrap in ((SpanBertForPreTraining(BERT_CFG.with_vocab(len(vocab))), "spanbert-pretrain", wrap_cls_sep),
                              (GPTForSequenceClassification(GPT_CFG.with_vocab(len(vocab))), "gpt-classifier", gpt_wrap)):
        folder = export(model, kind, vocab, tmp_path)
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        texts = reviews + messy
        x, m = pad([wrap(ids, model.cfg.n_seq) for ids in vocab.encode_batch(texts)])
        enc = tok(texts, padding=True, truncation=True, return_tensors="pt")  # raw text: it normalizes itself
        assert torch.equal(enc["input_ids"], x) and torch.equal(enc["attention_mask"], m)
        assert tok.convert_ids_to_tokens(list(range(7))) == SPECIAL_PIECES
        assert tok.decode(enc["input_ids"][0], skip_special_tokens=True) == normalize_text(texts[0])
        assert (folder / "tokenizer.model").read_bytes() == Path(vocab.path).read_bytes()


def test_tokenizer_on_real_nsmc(corpus_dir, vocab, tmp_path):
    """All 50,000 reviews of the real NSMC test file, raw, with the sample vocab (small: much byte
    fallback): the tokenizer's ids are ours."""
    rows, _ = read_nsmc_tsv(corpus_dir / "nsmc" / "ratings_test.txt")
    texts = [r["document"] for r in rows]
    folder = export(BertForSequenceClassification(BERT_CFG.with_vocab(len(vocab))), "bert-classifier", vocab, tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    ours = [wrap_cls_sep(ids, 10**6) for ids in vocab.encode_batch(texts)]
    theirs = tok(texts)["input_ids"]
    mismatches = [t for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, e.g. {mismatches[:3]}"


# --- import ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_segment", [2, 0])
def test_bert_export_import_round_trip(vocab, tmp_path, n_segment):
    """ours -> HF folder -> our checkpoint: identical trunk weights, and train.py's loader takes it."""
    from common.finetune import load_pretrained

    cfg = ModelConfig(**{**BERT_CFG.to_dict(), "n_segment": n_segment}).with_vocab(len(vocab))
    model = BertForPreTraining(cfg)
    randomize(model)
    state = import_bert(export(model, "bert-pretrain", vocab, tmp_path), vocab, name="bert")
    assert state["kind"] == "bert-pretrain" and state["config"] == cfg.to_dict()
    ours = {f"trunk.{k}": v for k, v in model.trunk.state_dict().items()}
    assert state["model"].keys() == ours.keys()
    assert all(torch.equal(state["model"][k], v) for k, v in ours.items())
    save_checkpoint(tmp_path / "imported.pth", state)
    classifier = BertForSequenceClassification(cfg)
    load_pretrained(classifier, tmp_path / "imported.pth", cfg, vocab, str(vocab.path))
    assert torch.equal(classifier.trunk.pooler[0].weight, model.trunk.pooler[0].weight)


def test_import_fresh_hf_bert(vocab, reviews, tmp_path):
    """A BertModel made by transformers (every weight random) -> our BertModel: same outputs."""
    hf = transformers.BertModel(bert_hf_config(BERT_CFG.with_vocab(len(vocab))))
    randomize(hf)
    hf.eval().save_pretrained(tmp_path / "hf")
    state = import_bert(tmp_path / "hf", vocab, name="spanbert")
    assert state["kind"] == "spanbert-pretrain"
    ours = BertModel(ModelConfig(**state["config"]))
    ours.load_state_dict({k[len("trunk."):]: v for k, v in state["model"].items()}, strict=True)
    ours.eval()
    with torch.no_grad():
        for x, m in batches(vocab, reviews, wrap_cls_sep, BERT_CFG.n_seq)[:2]:
            t = (torch.arange(x.size(1)) > 5).long().expand_as(x)  # exercise both segment rows
            hidden, pooled = ours(x, m, t)
            out = hf(input_ids=x, attention_mask=m, token_type_ids=t)
            assert_close(hidden[m.bool()], out.last_hidden_state[m.bool()])
            assert_close(pooled, out.pooler_output)


def test_import_refuses_other_vocab_and_models(vocab, tmp_path):
    from transformers import BertConfig, OpenAIGPTConfig

    BertConfig(vocab_size=len(vocab) + 1, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
               intermediate_size=64).save_pretrained(tmp_path / "bert")
    with pytest.raises(UserError, match="vocab_size"):
        import_bert(tmp_path / "bert", vocab, name="bert")
    OpenAIGPTConfig(vocab_size=len(vocab)).save_pretrained(tmp_path / "gpt")
    with pytest.raises(UserError, match="not BERT"):
        import_bert(tmp_path / "gpt", vocab, name="bert")
    with pytest.raises(UserError, match="no config.json"):
        import_bert(tmp_path / "absent", vocab, name="bert")


# --- command line ---------------------------------------------------------------------

def run_script(path: str, args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run a model folder's export.py in this process (no interpreter start-up): (exit code, output)."""
    monkeypatch.setattr(sys, "argv", [path, *args])
    try:
        runpy.run_path(str(REPO_ROOT / path), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out + out.err


def test_export_and_import_commands(vocab, tmp_path, monkeypatch, capsys):
    model = BertForPreTraining(BERT_CFG.with_vocab(len(vocab)))
    ckpt = tmp_path / "save_pretrain.pth"
    save_checkpoint(ckpt, {"kind": "bert-pretrain", "config": model.cfg.to_dict(), "model": model.state_dict(),
                           "vocab": {"fingerprint": vocab.fingerprint, "size": len(vocab)}})
    out = tmp_path / "hf"
    args = ["--model", str(ckpt), "--vocab", str(vocab.path), "--out", str(out)]
    code, text = run_script("bert/export.py", args, monkeypatch, capsys)
    assert code == 0 and "BertForPreTraining" in text and "NSP" in text
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()

    code, text = run_script("bert/export.py", args, monkeypatch, capsys)  # never overwritten silently
    assert code == 2 and "--force" in text
    assert run_script("bert/export.py", args + ["--force"], monkeypatch, capsys)[0] == 0

    imported = tmp_path / "imported.pth"
    code, text = run_script("bert/export.py", ["--import", str(out), "--vocab", str(vocab.path), "--out", str(imported)],
                            monkeypatch, capsys)
    assert code == 0 and imported.is_file() and "train.py --pretrain" in text

    code, text = run_script("gpt/export.py", ["--model", str(tmp_path / "none.pth"), "--out", str(tmp_path / "x")],
                            monkeypatch, capsys)
    assert code == 2 and "not found" in text and not (tmp_path / "x").exists()


def test_missing_transformers_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(UserError, match="requirements-extra.txt"):
        require_transformers()


def test_bert_mlm_training_tracks_hugging_face(vocab, tmp_path, sample_corpus):
    """The training side, not only the forward: the same batches (bert/pretrain.py's collate and whole-word
    masks over a store of packed reviews, no NSP) through our BertForPreTraining and Hugging Face's
    BertForMaskedLM started from the same weights, each with the project's AdamW groups, warmup and
    clipping, give the same loss at every step and the same weights after them. A wrong parameter group,
    an untied or doubly counted embedding, a loss over the wrong slots or a bias outside the optimizer would
    part the curves within a few steps."""
    from bert.data import build
    from bert.export import bert_trunk_to_hf, pretraining_heads_to_hf
    from bert.pretrain import PretrainingDataset, init_vocab_heads
    from common.pretrain import Subset
    from common.token_store import TokenStore
    from common.trainer import make_optimizer

    build("none", str(tmp_path / "store"), 48, vocab.path, workers=1, extra=str(sample_corpus["train"]),
          test_path=str(sample_corpus["test"]))
    cfg = dataclasses.replace(BERT_CFG, dropout=0.0).with_vocab(len(vocab))
    data = PretrainingDataset(TokenStore(tmp_path / "store"), cfg)
    torch.manual_seed(0)
    ours = BertForPreTraining(cfg)
    init_vocab_heads(ours, Subset(data, np.arange(len(data))))
    sd = ours.state_dict()
    theirs = transformers.BertForMaskedLM(bert_hf_config(cfg))
    weights = {**{f"bert.{k}": v for k, v in bert_trunk_to_hf(sd, "trunk.", cfg).items() if not k.startswith("pooler")},
               **{k: v for k, v in pretraining_heads_to_hf(sd).items() if k.startswith("cls.predictions")}}
    load_into(theirs, weights)
    assert theirs.cls.predictions.decoder.weight is theirs.bert.embeddings.word_embeddings.weight  # tied there too
    steps, lr = 12, 2e-3
    optimizers = [make_optimizer(m, lr, 0.01, fused=False) for m in (ours, theirs)]
    losses: list[list[float]] = [[], []]
    for step in range(steps):
        torch.manual_seed(step % 3)  # three batches, each seen four times: the loss must fall
        batch = data.collate(np.arange(step % 3 * 8, step % 3 * 8 + 8))
        labels = torch.full_like(batch["input_ids"], -100)
        used = batch["mlm_labels"] != PAD_ID
        labels.scatter_(1, batch["mlm_positions"], torch.where(used, batch["mlm_labels"], -100))
        loss_ours = ours(**batch)[0]
        loss_theirs = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             token_type_ids=batch["token_type_ids"], labels=labels).loss
        for model, optimizer, loss, log in zip((ours, theirs), optimizers, (loss_ours, loss_theirs), losses):
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / 3)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            log.append(float(loss.detach()))
    assert sum(losses[0][-3:]) < sum(losses[0][:3]) - 1.5, losses  # it trained
    assert max(abs(a - b) for a, b in zip(*losses)) < 1e-4, losses
    after = {f"bert.{k}": v for k, v in bert_trunk_to_hf(ours.state_dict(), "trunk.", cfg).items()}
    for name, value in theirs.state_dict().items():
        if name in after:
            assert_close(after[name], value)


def test_a_rotary_checkpoint_is_refused_by_export(vocab, tmp_path):
    """Hugging Face's BertModel has no rotary attention: exporting such a model would give other logits."""
    model = BertForPreTraining(dataclasses.replace(BERT_CFG, rotary=True).with_vocab(len(vocab)))
    with pytest.raises(UserError, match="rotary attention"):
        export(model, "bert-pretrain", vocab, tmp_path)
    assert not (tmp_path / "bert-pretrain-hf").exists()
