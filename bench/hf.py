"""Hugging Face `transformers` models of our shapes: the baselines.

Configs come from the export's maps (`gpt_hf_config` of gpt/export.py,
`bert_hf_config` of bert/export.py: the same mapping the export uses), so
a baseline has our layer count, widths, vocab, positions, activation and
LayerNorm epsilon. Each is built in the fastest
attention implementation it accepts, tried in the order of `ATTENTION_ORDER`
(OpenAIGPT has only "eager"; BERT and GPT-2 take "sdpa").

The fine-tuning baselines also get our classifier's weights (the same
weight maps), so both sides compute the same function on the same batches;
`max_logit_difference` checks it. The pretraining and generation baselines keep
their random initialization: weights do not change the speed.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bert.export import bert_hf_config, bert_trunk_to_hf
from common.cli import UserError
from common.config import ModelConfig
from common.vocab import BOS_ID, EOS_ID, PAD_ID
from gpt.export import gpt_hf_config, gpt_trunk_to_hf

ATTENTION_ORDER = ("sdpa", "eager")  # fastest first
INSTALL_HINT = "pip install -r requirements-bench.txt"


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise UserError(f"the benchmark's baselines need transformers: {INSTALL_HINT}") from e
    transformers.logging.set_verbosity_error()  # its notes on unused config keys would only clutter the progress
    return transformers


def build(model_class: Any, make_config: Any) -> tuple[nn.Module, str]:
    """(model, attention implementation): the first of ATTENTION_ORDER the class accepts.
    `make_config(attn_implementation)` returns the config."""
    errors = []
    for attn in ATTENTION_ORDER:
        try:
            return model_class(make_config(attn)), attn
        except (ValueError, ImportError) as e:  # "does not support an attention implementation ..."
            errors.append(f"{attn}: {str(e).splitlines()[0]}")
    raise RuntimeError(f"{model_class.__name__}: no attention implementation works ({'; '.join(errors)})")


# --- fine-tuning: same weights as ours -------------------------------------------------

def gpt_classifier(ours: nn.Module, cfg: ModelConfig) -> tuple[nn.Module, str]:
    """OpenAIGPTForSequenceClassification with the weights of our GPTForSequenceClassification.
    HF's `score` has no bias: ours must be zero (the caller zeroes it) for the logits to match."""
    from transformers import OpenAIGPTForSequenceClassification

    model, attn = build(OpenAIGPTForSequenceClassification,
                        lambda a: gpt_hf_config(cfg, num_labels=2, attn_implementation=a))
    sd = ours.state_dict()
    if float(sd["classifier.bias"].abs().max()) != 0.0:
        raise ValueError("zero our classifier bias first: OpenAIGPT's score layer has none")
    weights = {f"transformer.{k}": v for k, v in gpt_trunk_to_hf(sd, "trunk.", cfg.n_layer).items()}
    model.load_state_dict({**weights, "score.weight": sd["classifier.weight"]}, strict=True)
    return model, attn


def bert_classifier(ours: nn.Module, cfg: ModelConfig) -> tuple[nn.Module, str]:
    """BertForSequenceClassification with the weights of our BERT (or SpanBERT --logit cls) classifier."""
    from transformers import BertForSequenceClassification

    model, attn = build(BertForSequenceClassification,
                        lambda a: bert_hf_config(cfg, num_labels=2, attn_implementation=a))
    sd = ours.state_dict()
    weights = {f"bert.{k}": v for k, v in bert_trunk_to_hf(sd, "trunk.", cfg).items()}
    model.load_state_dict({**weights, "classifier.weight": sd["classifier.weight"],
                           "classifier.bias": sd["classifier.bias"]}, strict=True)
    return model, attn


@torch.no_grad()
def max_logit_difference(ours: nn.Module, theirs: nn.Module, batch: dict[str, Tensor]) -> float:
    """Largest |our class logit - theirs| on a batch, in eval mode (dropout off)."""
    was_training = ours.training, theirs.training
    ours.eval(), theirs.eval()
    a = ours.classify(batch["input_ids"], batch["attention_mask"])[0]
    b = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ours.train(was_training[0]), theirs.train(was_training[1])
    return float((a.float() - b.float()).abs().max())


# --- pretraining heads -----------------------------------------------------------------

# The Hugging Face head each of our pretraining models is compared with.
PRETRAINING_CLASS = {"gpt": "OpenAIGPTLMHeadModel", "bert": "BertForPreTraining", "spanbert": "BertForMaskedLM"}


def pretraining_model(name: str, cfg: ModelConfig) -> tuple[nn.Module, str]:
    """The Hugging Face pretraining model of the same shape (random init)."""
    import transformers

    model_class = getattr(transformers, PRETRAINING_CLASS[name])
    make_config = gpt_hf_config if name == "gpt" else bert_hf_config
    return build(model_class, lambda a: make_config(cfg, attn_implementation=a))


def pretraining_batch(name: str, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our pretraining batch as the Hugging Face head's arguments, the same tokens and targets.

    gpt: labels = the inputs (HF shifts them inside: 255 targets of a 256-token window, ours 256).
    bert: MLM labels at the masked positions (-100 elsewhere); NSP label flipped (HF's 0 = "B follows A").
    spanbert: MLM labels only: no Hugging Face class has the span boundary objective.
    """
    if name == "gpt":
        return {"input_ids": batch["input_ids"], "labels": batch["input_ids"]}
    input_ids, positions, mlm_labels = batch["input_ids"], batch["mlm_positions"], batch["mlm_labels"]
    labels = torch.full_like(input_ids, -100)
    keep = mlm_labels != PAD_ID
    rows = torch.arange(input_ids.size(0))[:, None].expand_as(positions)
    labels[rows[keep], positions[keep]] = mlm_labels[keep]
    out = {"input_ids": input_ids, "attention_mask": batch["attention_mask"], "labels": labels}
    if name == "bert":
        out["token_type_ids"] = batch["token_type_ids"]
        out["next_sentence_label"] = 1 - batch["nsp_labels"]
    return out


# --- generation ------------------------------------------------------------------------

def gpt2_lm(cfg: ModelConfig) -> tuple[nn.Module, str]:
    """GPT2LMHeadModel of our GPT's shape (layers, widths, vocab, positions; tanh GELU), random init.
    GPT-2 rather than OpenAIGPT because it has Hugging Face's KV cache; it is pre-LN
    with a final LayerNorm, one LayerNorm more than ours: the same cost to within a hair."""
    from transformers import GPT2Config, GPT2LMHeadModel

    def make_config(attn: str) -> Any:
        return GPT2Config(vocab_size=cfg.n_vocab, n_positions=cfg.n_seq, n_embd=cfg.d_hidn, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_inner=cfg.d_ff, activation_function="gelu_new",
                          resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                          layer_norm_epsilon=cfg.layer_norm_epsilon, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                          pad_token_id=PAD_ID, attn_implementation=attn)

    return build(GPT2LMHeadModel, make_config)
