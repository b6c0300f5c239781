"""Case 2, a pretraining step on batches made by each model's pretraining dataset, against Hugging Face
heads; and case 5 (CUDA only), the same step of the full-size config.json models in bf16, with its MFU."""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import hf
from bench.context import Contender, Context, hf_loss, ours_loss
from bench.timing import Measurement, interleaved, span_boundary_flops, time_once, trunk_flops, vocab_head_flops
from common.config import ModelConfig
from common.evaluation import to_device
from common.layers import LMHead
from common.losses import IGNORE, Metrics, _loss_and_accuracy
from common.token_store import TokenStore
from common.vocab import PAD_ID


@dataclass
class PretrainResult:
    model: str
    config: str
    hf_class: str
    attn: str
    collate_ms: float  # our dataset's collate, per batch (not in the step times)
    ours: Measurement
    hf: Measurement
    full_logits: Measurement | None = None  # ours with the vocab heads' loss on full logits (before the chunked one)


def pretraining(name: str) -> tuple[type, type, float]:
    """A model's pretraining pieces as its pretrain.py defines them: the model class, the dataset over a
    token store, and pretrain.py's default --lr."""
    module = importlib.import_module(f"{name}.pretrain")
    model = {"gpt": "GPTLMHeadModel", "bert": "BertForPreTraining", "spanbert": "SpanBertForPreTraining"}[name]
    dataset = "WindowDataset" if name == "gpt" else "PretrainingDataset"
    return getattr(module, model), getattr(module, dataset), module.parse_args([]).lr


def pretraining_batches(ctx: Context, name: str, cfg: ModelConfig, n: int) -> tuple[list[dict[str, Tensor]], float]:
    """n batches drawn as the trainer draws them (random instances of the store through the model's
    pretraining dataset: windows for GPT, fresh masks for BERT / SpanBERT); and collate ms per batch."""
    _, open_dataset, _ = pretraining(name)
    dataset = open_dataset(TokenStore(ctx.stores.build(name, 1).store), cfg)
    size = ctx.settings.pretrain_batch
    rng = np.random.default_rng(ctx.settings.seed)
    torch.manual_seed(ctx.settings.seed)  # the masks' generator draws from torch's RNG
    draws = [rng.choice(len(dataset), size=size, replace=len(dataset) < size) for _ in range(n)]
    batches: list[dict[str, Tensor]] = []
    seconds = time_once(lambda: batches.extend(dataset.collate(d) for d in draws), torch.device("cpu"))
    return batches, 1000 * seconds / n


def pretraining_flops(name: str, cfg: ModelConfig, batch: dict[str, Tensor], hugging_face: bool) -> float:
    """FLOPs of one step: the trunk over the padded batch, plus the heads over the rows they score.
    Ours score only the targets (GPT: every position; BERT/SpanBERT: the masked ones, + SBO);
    Hugging Face's MLM heads score every position."""
    B, T = batch["input_ids"].shape
    flops = trunk_flops(cfg, B, T)
    if name == "gpt":
        return flops + vocab_head_flops(cfg, B * T)
    if hugging_face:
        return flops + vocab_head_flops(cfg, B * T, transform=True)
    masked = int((batch["mlm_labels"] != PAD_ID).sum())
    flops += vocab_head_flops(cfg, masked, transform=True)
    return flops + (span_boundary_flops(cfg, masked) if name == "spanbert" else 0.0)


def real_tokens(batch: dict[str, Tensor]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def full_logits_loss(head: LMHead, hidden: Tensor, targets: Tensor, name: str = "") -> tuple[Tensor, Metrics]:
    """`LMHead.loss` as it was before `linear_cross_entropy`: the (N, n_vocab) logits of the scored rows,
    then F.cross_entropy (autograd keeps the logits, their log-softmax and its gradient); IGNORE targets
    take no part, as in `token_loss`."""
    logits = LMHead.forward(head, hidden).float()  # LMHead's projection (SpanBoundaryHead.forward takes spans)
    loss_sum = F.cross_entropy(logits, targets, reduction="sum", ignore_index=IGNORE)
    n = (targets != IGNORE).sum()
    correct = (logits.argmax(-1) == targets).sum()  # IGNORE is never an argmax
    return loss_sum / n.clamp(min=1), _loss_and_accuracy(loss_sum, correct, n, name)


def with_full_logits_loss(model: nn.Module) -> nn.Module:
    """The model with every vocab head (MLM, SBO, GPT's LM head) scoring through `full_logits_loss`."""
    for module in model.modules():
        if isinstance(module, LMHead):
            module.loss = functools.partial(full_logits_loss, module)
    return model


def pretrain_case(ctx: Context, name: str, config_file: str = "config_half.json",
                  profile: bool = False) -> PretrainResult:
    s, rt = ctx.settings, ctx.runtime
    build_model, _, lr = pretraining(name)
    cfg = ctx.config(name, config_file)
    batches, collate_ms = pretraining_batches(ctx, name, cfg, s.reps + 1)
    hf_batches = [hf.pretraining_batch(name, b) for b in batches]
    torch.manual_seed(s.seed)
    ours = Contender(build_model(cfg), ours_loss, rt, lr)
    torch.manual_seed(s.seed)  # the same initial weights
    full = Contender(with_full_logits_loss(build_model(cfg)), ours_loss, rt, lr)
    hf_model, attn = hf.pretraining_model(name, cfg)
    theirs = Contender(hf_model, hf_loss, rt, lr)
    on_device = [to_device(b, ctx.device) for b in batches]
    hf_on_device = [to_device(b, ctx.device) for b in hf_batches]
    ours.step(on_device[0]), full.step(on_device[0]), theirs.step(hf_on_device[0])  # warm-up (one whole batch is plenty)
    if profile:
        print_profile(ctx, f"{name} pretraining step (ours, {config_file})", lambda: ours.step(on_device[0]))
    B, T = batches[0]["input_ids"].shape
    ctx.log(f"  {name} ({config_file}): batches of {B} x {T}; HF {type(hf_model).__name__} ({attn}); "
            f"collate {collate_ms:.0f} ms/batch")
    times = interleaved({"ours": lambda r: ours.step(on_device[r + 1]),
                         "full logits": lambda r: full.step(on_device[r + 1]),
                         "hf": lambda r: theirs.step(hf_on_device[r + 1])}, s.reps, ctx.device, ctx.log)
    timed = batches[1:]
    return PretrainResult(
        name, config_file, type(hf_model).__name__, attn, collate_ms,
        ours=Measurement("ours", times["ours"], [real_tokens(b) for b in timed],
                         [pretraining_flops(name, cfg, b, False) for b in timed]),
        hf=Measurement(f"HF {type(hf_model).__name__}", times["hf"], [real_tokens(b) for b in timed],
                       [pretraining_flops(name, cfg, b, True) for b in timed]),
        full_logits=Measurement("ours, full-logit loss", times["full logits"], [real_tokens(b) for b in timed],
                                [pretraining_flops(name, cfg, b, False) for b in timed]),
    )


def print_profile(ctx: Context, title: str, step: Callable[[], None], rows: int = 20) -> None:
    """torch.profiler's top ops (by self time) of one call of `step` (--profile)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        time_once(step, ctx.device)
    key = "self_cuda_time_total" if ctx.device.type == "cuda" else "self_cpu_time_total"
    print(f"\n--profile: {title}, top {rows} ops by self time")
    print(prof.key_averages().table(sort_by=key, row_limit=rows), flush=True)


@dataclass
class GpuResult:
    bf16_peak_gflops: float
    pretrain: list[PretrainResult] = field(default_factory=list)


def gpu_case(ctx: Context, models: tuple[str, ...]) -> GpuResult:
    """Pretraining steps of the config.json models under bf16 autocast (as training runs on CUDA);
    MFU = FLOPs executed / the measured bf16 matmul rate (ctx.peak_gflops on CUDA)."""
    if ctx.device.type != "cuda":
        raise ValueError("case 5 runs on CUDA only (--gpu N)")
    return GpuResult(ctx.peak_gflops, [pretrain_case(ctx, name, "config.json") for name in models])
