"""Export GPT to a Hugging Face transformers folder: OpenAIGPTLMHeadModel (pretrained)
or OpenAIGPTForSequenceClassification (fine-tuned), with its tokenizer.

  python export.py --model save_pretrain.pth --out hf/     # or save_best.pth from train.py

| checkpoint kind | transformers class                 | notes |
|---|---|---|
| gpt-pretrain    | OpenAIGPTLMHeadModel               | GPT-1: learned positions, post-LN, tanh GELU; our LM bias in lm_head_bias.pt |
| gpt-classifier  | OpenAIGPTForSequenceClassification | classifies the last non-pad token = our [EOS]; bias folded (fold_classifier_bias) |

OpenAIGPT's `c_attn` is a Conv1D holding our fused qkv matrix transposed. The
folder, tokenizer and command line are common/export.py's; transformers comes
from requirements-extra.txt.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from common.cli import UserError
from common.config import ModelConfig
from common.export import ExportSpec, Exported, classifier_config_extra, export_main, load_into
from common.vocab import BOS, EOS

LM_BIAS_FILE = "lm_head_bias.pt"  # GPT's LM output bias, which OpenAIGPTLMHeadModel has no place for


def gpt_hf_config(cfg: ModelConfig, **extra: Any):
    """OpenAIGPTConfig of our GPT. HF's afn "gelu" is the tanh approximation (gelu_new), as in the
    GPT-1 code and in gpt/model.py (gelu_approximate="tanh")."""
    from transformers import OpenAIGPTConfig

    if cfg.d_ff != 4 * cfg.d_hidn:  # OpenAIGPT's MLP is hard-wired to 4 x n_embd
        raise UserError(f"OpenAIGPT requires d_ff = 4 x d_hidn, the checkpoint has d_ff={cfg.d_ff}, d_hidn={cfg.d_hidn}")
    if cfg.n_segment:
        raise UserError(f"OpenAIGPT has no segment embeddings, the checkpoint has n_segment={cfg.n_segment}")
    return OpenAIGPTConfig(
        vocab_size=cfg.n_vocab, n_positions=cfg.n_seq, n_embd=cfg.d_hidn, n_layer=cfg.n_layer, n_head=cfg.n_head,
        afn="gelu", resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        layer_norm_epsilon=cfg.layer_norm_epsilon, pad_token_id=0, bos_token_id=2, eos_token_id=3, **extra,
    )


def gpt_trunk_to_hf(sd: dict[str, Tensor], p: str, n_layer: int) -> dict[str, Tensor]:
    """Our GPT trunk (keys under prefix `p`, e.g. "trunk.") -> OpenAIGPTModel keys (without the
    "transformer." prefix). Conv1D computes x @ W + b with W (in, out): our Linear weights transposed."""
    out = {"tokens_embed.weight": sd[f"{p}embeddings.token.weight"],
           "positions_embed.weight": sd[f"{p}embeddings.position.weight"]}
    for i in range(n_layer):
        s, h = f"{p}layers.{i}.", f"h.{i}."
        for ours, theirs, conv in (("attention.qkv", "attn.c_attn", True), ("attention.out", "attn.c_proj", True),
                                   ("ffn.fc", "mlp.c_fc", True), ("ffn.proj", "mlp.c_proj", True),
                                   ("attention_norm", "ln_1", False), ("ffn_norm", "ln_2", False)):
            w = sd[f"{s}{ours}.weight"]
            out[f"{h}{theirs}.weight"] = w.t().contiguous() if conv else w
            out[f"{h}{theirs}.bias"] = sd[f"{s}{ours}.bias"]
    return out


def fold_classifier_bias(weight: Tensor, bias: Tensor, norm_bias: Tensor) -> Tensor:
    """The last LayerNorm bias that makes a bias-free classifier give W h + b.

    OpenAIGPTForSequenceClassification's `score` is a Linear without bias. The last
    layer's post-LN output h = g * n + beta feeds only that classifier in the exported
    model, so beta' = beta + d with W d = b (minimum-norm d) gives W h' = W h + b exactly.
    The exported model's last hidden states are shifted by d; its class logits are ours.
    """
    w, b = weight.double(), bias.double()
    d = torch.linalg.pinv(w) @ b
    residual = float((w @ d - b).abs().max())
    if residual > 1e-6 * (1.0 + float(b.abs().max())):
        raise UserError(f"cannot fold the classifier bias into the last LayerNorm (rank-deficient classifier, "
                        f"residual {residual:.2e}); this classifier has no exact OpenAIGPTForSequenceClassification")
    return (norm_bias.double() + d).to(norm_bias.dtype)


def _trunk(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    return {f"transformer.{k}": v for k, v in gpt_trunk_to_hf(sd, "trunk.", cfg.n_layer).items()}


def export_lm(sd: dict[str, Tensor], cfg: ModelConfig) -> Exported:
    """The pretrained language model (pretrain.py's save_pretrain.pth)."""
    from transformers import OpenAIGPTLMHeadModel

    trunk = _trunk(sd, cfg)
    model = OpenAIGPTLMHeadModel(gpt_hf_config(cfg))
    load_into(model, {**trunk, "lm_head.weight": trunk["transformer.tokens_embed.weight"]})  # tied
    notes = ["generation prompts start with [BOS] (the tokenizer adds it)"]
    extra = {}
    if "lm_head.bias" in sd:  # ours has an output bias (common.layers.LMHead), OpenAIGPT's lm_head none
        extra[LM_BIAS_FILE] = {"lm_head.bias": sd["lm_head.bias"]}
        notes.append(f"OpenAIGPTLMHeadModel's lm_head has no bias: add the one in {LM_BIAS_FILE} "
                     f"(torch.load(...)['lm_head.bias']) to its logits to get ours; hidden states are identical")
    return Exported(model, ([BOS], []), notes, extra)


def export_classifier(sd: dict[str, Tensor], cfg: ModelConfig, options: dict[str, Any]) -> Exported:
    """The NSMC classifier (train.py's save_best.pth); its options (--lm) change nothing exported."""
    from transformers import OpenAIGPTForSequenceClassification

    trunk = _trunk(sd, cfg)
    n_labels = sd["classifier.weight"].size(0)
    model = OpenAIGPTForSequenceClassification(gpt_hf_config(cfg, **classifier_config_extra(n_labels)))
    last = f"transformer.h.{cfg.n_layer - 1}.ln_2.bias"
    trunk[last] = fold_classifier_bias(sd["classifier.weight"], sd["classifier.bias"], trunk[last])
    load_into(model, {**trunk, "score.weight": sd["classifier.weight"]})
    notes = ["classifies the last non-pad token (pad_token_id 0), which is our [EOS]: input must be right-padded "
             "[BOS] review [EOS] (the tokenizer does this)",
             "HF's `score` has no bias: ours is folded into the last layer's ln_2 bias, so the class logits are ours "
             "but the exported last hidden states are shifted by a constant vector",
             "the auxiliary LM head is tied to the token embedding; it is not part of this class"]
    return Exported(model, ([BOS], [EOS]), notes)


SPEC = ExportSpec(name="gpt", folder=Path(__file__).resolve().parent,
                  export_pretrained=export_lm, export_classifier=export_classifier, hf_trunk="OpenAIGPTModel")

if __name__ == "__main__":
    export_main(SPEC)
