"""Case 1, fine-tuning on NSMC reviews (forward + backward + clip + AdamW step, as common/trainer.py does):
1a our classifier against Hugging Face's on identical batches, 1b our pipeline against the classic one."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bench import classic, hf
from bench.context import Contender, Context, hf_loss, ours_loss
from bench.timing import Measurement, interleaved, trunk_flops, vocab_head_flops
from common.config import ModelConfig
from common.evaluation import to_device
from common.nsmc import ReviewDataset
from common.trainer import length_bucketed_batches, random_batches


@dataclass
class FinetuneResult:
    model: str
    hf_class: str
    attn: str  # Hugging Face attention implementation
    logit_difference: float  # max |ours - HF| class logit, eval mode, first batch: same function
    ours: Measurement  # our model, length-bucketed batches (our pipeline)
    hf: Measurement  # Hugging Face, the identical batches
    classic: Measurement  # the classic pipeline: classic model, random pad-to-longest batches
    ours_random: Measurement  # our model on the classic batches: how much is batching, how much the model


def plan_stats(lengths: np.ndarray, plan: list[np.ndarray]) -> tuple[int, int]:
    """(real tokens, padded tokens) of a batch plan whose batches are padded to their longest."""
    real = sum(int(lengths[b].sum()) for b in plan)
    padded = sum(len(b) * int(lengths[b].max()) for b in plan)
    return real, padded


def plan_flops(cfg: ModelConfig, lengths: np.ndarray, plan: list[np.ndarray], lm_logits: bool = False) -> float:
    """FLOPs a plan executes: the trunk over every padded position (the classifier head is
    negligible); lm_logits: plus the forward of the vocab projection at every position (classic GPT)."""
    total = 0.0
    for b in plan:
        T = int(lengths[b].max())
        total += trunk_flops(cfg, len(b), T)
        if lm_logits:
            total += vocab_head_flops(cfg, len(b) * T, backward=False)
    return total


def finetune_case(ctx: Context, name: str, encoded: list[list[int]], labels: np.ndarray) -> FinetuneResult:
    s, rt = ctx.settings, ctx.runtime
    script = importlib.import_module(f"{name}.train")
    lr = script.parse_args([]).lr  # train.py's default
    cfg = ctx.config(name)
    reviews = [np.asarray(script.wrap(ids, cfg.n_seq), dtype=np.int64) for ids in encoded]
    dataset = ReviewDataset(reviews, labels)
    # Each pipeline's first batches of an epoch over all reviews, as train.py would draw them.
    bucketed = length_bucketed_batches(dataset.lengths, s.finetune_batch, s.seed, epoch=0)[: s.finetune_batches]
    shuffled = random_batches(len(dataset), s.finetune_batch, s.seed, epoch=0)[: s.classic_batches]
    if not shuffled:
        raise ValueError(f"not one batch of {s.finetune_batch} among {len(dataset)} reviews")

    torch.manual_seed(s.seed)
    model = script.classifier(cfg, {})  # the defaults of train.py: GPT --lm 0, SpanBERT --logit cls
    with torch.no_grad():
        model.classifier.bias.zero_()  # OpenAIGPT's score has no bias: start both from the same function
    hf_model, attn = (hf.gpt_classifier if name == "gpt" else hf.bert_classifier)(model, cfg)
    first = to_device(dataset.collate(bucketed[0]), ctx.device)
    ours = Contender(model, ours_loss, rt, lr)
    theirs = Contender(hf_model, hf_loss, rt, lr)
    difference = hf.max_logit_difference(model, hf_model, first)
    old = Contender(classic.classifier(name, cfg), ours_loss, rt, lr)

    def classic_collate(idx: np.ndarray) -> dict[str, Tensor]:
        return classic.collate(reviews, labels, idx)

    def runner(contender: Contender, collate: Callable[[np.ndarray], dict[str, Tensor]],
               plan: list[np.ndarray]) -> Callable[[int], None]:
        def run(_rep: int) -> None:  # collating is part of a pipeline: timed too
            for idx in plan:
                contender.step(to_device(collate(idx), ctx.device))
        return run

    for contender, collate, plan in ((ours, dataset.collate, bucketed), (theirs, dataset.collate, bucketed),
                                     (old, classic_collate, shuffled), (ours, dataset.collate, shuffled)):
        for idx in plan[: s.warmup_steps]:  # warm-up: allocator, kernels, AdamW state
            contender.step(to_device(collate(idx), ctx.device))
    ctx.log(f"  {name}: {len(bucketed)} length-bucketed and {len(shuffled)} random batches of {s.finetune_batch} "
            f"per rep; HF {type(hf_model).__name__} ({attn}); max |logit difference| {difference:.1e}")
    times = interleaved({"ours": runner(ours, dataset.collate, bucketed),
                         "hf": runner(theirs, dataset.collate, bucketed),
                         "classic": runner(old, classic_collate, shuffled),
                         "ours_random": runner(ours, dataset.collate, shuffled)}, s.reps, ctx.device, ctx.log)

    def measurement(label: str, seconds: list[float], plan: list[np.ndarray], lm_logits: bool = False) -> Measurement:
        real, padded = plan_stats(dataset.lengths, plan)
        return Measurement(label, seconds, [real] * len(seconds),
                           [plan_flops(cfg, dataset.lengths, plan, lm_logits)] * len(seconds),
                           {"real_share": real / padded, "batches": len(plan)})

    return FinetuneResult(
        name, type(hf_model).__name__, attn, difference,
        ours=measurement("ours", times["ours"], bucketed),
        hf=measurement(f"HF {type(hf_model).__name__}", times["hf"], bucketed),
        classic=measurement("classic", times["classic"], shuffled, lm_logits=name == "gpt"),
        ours_random=measurement("ours, random batches", times["ours_random"], shuffled),
    )


def encode_reviews(ctx: Context) -> tuple[list[list[int]], np.ndarray]:
    """Every review's ids (without special tokens; each model wraps them) and labels."""
    rows = ctx.inputs.reviews
    return ctx.inputs.vocab.encode_batch([r["document"] for r in rows]), np.asarray([r["label"] for r in rows])
