"""Hugging Face `transformers` export (and import): the part every model folder shares.

A model folder's export.py declares an `ExportSpec`: how its pretraining and
classifier checkpoints become transformers models (and, for the encoders, how a
Hugging Face BERT folder becomes its pretraining checkpoint; the shared encoder
map is in bert/export.py). This module checks the checkpoint, builds the
tokenizer, writes the folder and runs the command line; it knows no model.

Export writes a `save_pretrained` folder that `from_pretrained` / `AutoTokenizer`
load, giving the same logits and the same token ids as this project.

Weight layout: our attention has one fused `qkv` Linear (out = 3 x D, q | k | v,
heads contiguous inside each); each folder's map splits or transposes it for
its Hugging Face class.

The tokenizer is a `tokenizer.json` (Hugging Face `tokenizers`) rebuilt from the
SentencePiece model: our `normalize_text` (NFC, whitespace runs -> one space,
strip) as its normalizer, the BPE vocab and merges in SentencePiece's score
order, byte fallback, the 7 special pieces at ids 0-6, and the model's wrap
([BOS] text [EOS] / [CLS] text [SEP]) as its post-processor. The .model file is
copied beside it.

transformers is an optional dependency (requirements-extra.txt): it is imported
inside the functions that need it.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from common.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from common.cli import UserError, add_vocab_option, make_parser, rel, require_file, require_output_dir, run_main
from common.config import ModelConfig
from common.vocab import BOS, CLS, EOS, MASK, PAD, SEP, SPECIAL_PIECES, UNK, WORD_MARKER, Vocab, load_vocab

INSTALL_HINT = "pip install -r requirements-extra.txt"
NSMC_LABELS = {0: "negative", 1: "positive"}
TOKENIZER_MODEL = "tokenizer.model"  # the SentencePiece model, copied as is
EXPORT_INFO = "export_info.json"  # what was exported from where, with which vocab


def require_transformers():
    """Import transformers, or say how to install it."""
    try:
        import transformers
    except ImportError as e:
        raise UserError(f"the Hugging Face export/import needs transformers: {INSTALL_HINT}") from e
    return transformers


@dataclass
class Exported:
    model: Any  # the transformers model, weights loaded
    template: tuple[list[str], list[str]]  # (pieces before, after) the text, for the tokenizer
    notes: list[str] = field(default_factory=list)
    extra_files: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # weights HF's class cannot hold: name -> torch.save'd dict


@dataclass(frozen=True)
class ExportSpec:
    """What a model folder's export.py declares. Checkpoints are of kind "<name>-pretrain"
    (pretrain.py) or "<name>-classifier" (train.py)."""
    name: str  # the model's name in its checkpoints' kind and in --help
    folder: Path  # the model folder (defaults are resolved against it)
    export_pretrained: Callable[[dict[str, Tensor], ModelConfig], Exported]  # (state dict, config)
    export_classifier: Callable[[dict[str, Tensor], ModelConfig, dict[str, Any]], Exported]  # (..., options)
    hf_trunk: str  # the transformers class of the trunk, as messages name it ("BertModel")
    # optional (--import): a Hugging Face folder -> our "<name>-pretrain" checkpoint state; args (folder, vocab, name)
    import_pretrained: Callable[[str | os.PathLike, Vocab, str], dict[str, Any]] | None = None


def classifier_config_extra(n_labels: int) -> dict[str, Any]:
    """The label fields of a transformers config of an NSMC classifier."""
    labels = NSMC_LABELS if n_labels == 2 else {i: f"LABEL_{i}" for i in range(n_labels)}
    return {"num_labels": n_labels, "id2label": labels, "label2id": {v: k for k, v in labels.items()}}


def load_into(model: torch.nn.Module, weights: dict[str, Tensor]) -> None:
    """Copy weights into a freshly built HF model; every tensor it has must be given."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:  # a mapping bug, not a user error
        raise RuntimeError(f"weight mapping mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in weights.items():
        if expected[k].shape != v.shape:
            raise RuntimeError(f"weight mapping: {k} has shape {tuple(v.shape)}, HF expects {tuple(expected[k].shape)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()}, strict=True)


def export_state(spec: ExportSpec, state: dict[str, Any]) -> Exported:
    """The transformers model of one of the spec's checkpoints (already loaded and checked)."""
    require_transformers()
    kind, sd = state.get("kind"), state["model"]
    cfg = ModelConfig(**state["config"])
    if kind == f"{spec.name}-pretrain":
        exported = spec.export_pretrained(sd, cfg)
    elif kind == f"{spec.name}-classifier":
        exported = spec.export_classifier(sd, cfg, state.get("options", {}))
    else:
        raise UserError(f"cannot export a checkpoint of kind {kind!r} here (expected {spec.name}'s save_pretrain.pth "
                        f"from pretrain.py or save_best.pth from train.py)")
    exported.model.eval()
    return exported


# --- tokenizer -----------------------------------------------------------------------

def _python_whitespace_class() -> str:
    """A regex class of the characters Python's `\\s` matches (normalize_text's), for the
    tokenizer's normalizer, whose own `\\s` (Oniguruma) is a slightly different set."""
    chars = [c for c in map(chr, range(0x110000)) if c.isspace()]  # what `\s` matches in a str pattern
    return "[" + "".join(f"\\x{{{ord(c):X}}}" for c in chars) + "]+"


def bpe_merges(vocab: Vocab) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's encoding: every split of a learned piece into
    two learned pieces, ranked by the merged piece's score (SentencePiece merges the
    adjacent pair whose concatenation scores highest)."""
    sp = vocab.sp
    normal = {sp.IdToPiece(i): i for i in range(len(SPECIAL_PIECES), len(vocab)) if not (sp.IsByte(i) or sp.IsUnused(i))}
    ranked = sorted(normal.items(), key=lambda kv: (-sp.GetScore(kv[1]), kv[1]))
    merges = []
    for piece, _ in ranked:
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece))]
        splits = [s for s in splits if s[0] in normal and s[1] in normal]
        merges += sorted(splits, key=lambda s: (normal[s[0]], normal[s[1]]))
    return merges


def build_tokenizer(vocab: Vocab, template: tuple[list[str], list[str]], n_seq: int):
    """A transformers fast tokenizer giving the ids of `vocab.encode` (normalization included),
    wrapped in `template` (e.g. [CLS] ... [SEP]) as our models see a text."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    sp = vocab.sp
    pieces = {sp.IdToPiece(i): i for i in range(len(vocab))}
    tok = Tokenizer(models.BPE(vocab=pieces, merges=bpe_merges(vocab), unk_token=UNK, byte_fallback=True, fuse_unk=True))
    # normalize_text: NFC, whitespace runs -> one space, strip (SentencePiece's own normalizer is identity)
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(_python_whitespace_class()), " "),
                                           normalizers.Strip()])
    # SentencePiece's dummy prefix and whitespace escaping: "▁" before every word
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_MARKER, prepend_scheme="always", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace(WORD_MARKER, " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    # matched in the normalized text, so that spaces around a [SEP] / [CLS] / [MASK] written in the
    # text become pieces as in SentencePiece (where they are user-defined symbols)
    tok.add_special_tokens([AddedToken(p, special=True, normalized=True) for p in SPECIAL_PIECES])
    before, after = template
    single = " ".join([*before, "$A:0", *after])
    pair = " ".join([*before, "$A:0", *after, "$B:1", *[f"{p}:1" for p in after]]) if after else None
    used = sorted(set(before + after), key=SPECIAL_PIECES.index)
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                       special_tokens=[(p, pieces[p]) for p in used])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=n_seq, padding_side="right",
                                   pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS, sep_token=SEP,
                                   cls_token=CLS, mask_token=MASK, clean_up_tokenization_spaces=False)


# --- the folder ----------------------------------------------------------------------

def _readme(info: dict[str, Any]) -> str:
    notes = "".join(f"- {n}\n" for n in info["notes"])
    return (f"# {info['hf_class']} exported from `{info['source']}`\n\n"
            f"Checkpoint kind `{info['kind']}`, vocab fingerprint `{info['vocab']['fingerprint']}` "
            f"({info['vocab']['size']} pieces). Load with\n\n"
            f"```python\nfrom transformers import AutoTokenizer, {info['hf_class']}\n"
            f"tok = AutoTokenizer.from_pretrained(DIR)\nmodel = {info['hf_class']}.from_pretrained(DIR).eval()\n"
            f"batch = tok([\"이 영화 진짜 최고였다 ㅋㅋ\"], padding=True, truncation=True, return_tensors=\"pt\")\n"
            f"out = model(**batch)\n```\n\n"
            f"The tokenizer applies the project's normalization (NFC, whitespace runs collapsed, ends stripped) "
            f"and adds the special pieces the model was trained with; `{TOKENIZER_MODEL}` is the SentencePiece "
            f"model itself (ids 0-6: {', '.join(SPECIAL_PIECES)}).\n\n## Notes\n\n{notes}")


def _move_into(tmp: Path, out: Path) -> None:
    """Put the finished `tmp` folder at `out`: renamed when `out` is new (atomic), else its files
    moved into `out` one by one (--force), replacing files of the same name and nothing else."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for f in tmp.iterdir():
        os.replace(f, out / f.name)


def export_checkpoint(spec: ExportSpec, model_path: str | os.PathLike, vocab_path: str | os.PathLike,
                      out: str | os.PathLike, force: bool = False) -> dict[str, Any]:
    """Write `out` (save_pretrained model + tokenizer + notes); returns export_info."""
    require_transformers()
    model_path, out = Path(model_path), Path(out)
    require_file(model_path, "checkpoint", "pass --model save_pretrain.pth or save_best.pth")
    require_output_dir(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file: --out names the folder to write")
    if out.exists() and not force and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty (pass --force to overwrite its files, or choose another --out)")
    vocab = load_vocab(vocab_path)
    state = load_checkpoint(model_path, fallback=False)
    if "config" not in state:
        raise UserError(f"{model_path} holds no model config: not a checkpoint of this project")
    check_compatible(state, model_path, state["config"], vocab.fingerprint, vocab_path)
    if state["config"].get("rotary"):
        raise UserError(f"{model_path} uses rotary attention (config rotary: true), which Hugging Face's "
                        f"{spec.hf_trunk} does not have: an export "
                        f"would not give this model's logits. Export a model trained with rotary: false")
    exported = export_state(spec, state)
    cfg = ModelConfig(**state["config"])
    info = {"source": model_path.name, "kind": state["kind"], "hf_class": type(exported.model).__name__,
            "config": state["config"], "options": state.get("options", {}),
            "vocab": {"fingerprint": vocab.fingerprint, "size": len(vocab)}, "notes": exported.notes}

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        exported.model.save_pretrained(tmp)
        build_tokenizer(vocab, exported.template, cfg.n_seq).save_pretrained(tmp)
        shutil.copyfile(vocab.path, tmp / TOKENIZER_MODEL)
        for name, tensors in exported.extra_files.items():
            torch.save(tensors, tmp / name)
        (tmp / EXPORT_INFO).write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_readme(info), encoding="utf-8")
        _move_into(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


# --- command line --------------------------------------------------------------------

def export_main(spec: ExportSpec) -> None:
    """`python export.py` of one model folder."""
    folder, can_import = spec.folder, spec.import_pretrained is not None
    parser = make_parser(
        f"Export a {spec.name.upper()} checkpoint to a Hugging Face transformers folder (save_pretrained: model, "
        f"tokenizer, notes)" + (", or import a Hugging Face BertModel folder as a pretrained checkpoint." if can_import else "."))
    parser.add_argument("--model", default=rel(folder / "save_pretrain.pth"),
                        help="checkpoint to export: save_pretrain.pth (pretrain.py) or save_best.pth (train.py)")
    add_vocab_option(parser, "SentencePiece model the checkpoint was trained with")
    # the default depends on the mode; "%(default).0s" prints nothing and keeps argparse from adding "(default: None)"
    parser.add_argument("--out", default=None,
                        help=f"export: the folder to write (default: {rel(folder / 'hf')})"
                             + (f"; --import: the checkpoint to write (default: {rel(folder / 'save_pretrain.pth')})"
                                if can_import else "") + "%(default).0s")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out folder / replace an --out checkpoint")
    if can_import:
        parser.add_argument("--import", dest="import_dir", default=None,
                            help="a Hugging Face BERT folder (config.json + weights) to convert into our checkpoint "
                                 "format for train.py; its heads are not imported")
    args = parser.parse_args()

    def run() -> None:
        if can_import and args.import_dir:
            out = Path(args.out or folder / "save_pretrain.pth")
            require_output_dir(out)
            if out.exists() and not args.force:
                raise UserError(f"{out} exists (pass --force to replace it, or choose another --out)")
            state = spec.import_pretrained(args.import_dir, load_vocab(args.vocab), spec.name)
            save_checkpoint(out, state, keep_previous=args.force)
            print(f"imported {args.import_dir} -> {out} (kind {state['kind']}); fine-tune with: python train.py --pretrain {out}")
            return
        out = Path(args.out or folder / "hf")
        info = export_checkpoint(spec, args.model, args.vocab, out, force=args.force)
        print(f"exported {args.model} ({info['kind']}) -> {out} as {info['hf_class']}")
        for note in info["notes"]:
            print(f"  note: {note}")

    run_main(run)
