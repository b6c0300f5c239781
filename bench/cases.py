"""The benchmark cases. Each returns its measurements; bench/run.py orders them and writes the report.

1. fine-tuning on NSMC reviews (forward + backward + clip + AdamW step, as common/trainer.py does):
   1a ours against Hugging Face on identical batches, 1b our pipeline against the classic one;
2. a pretraining step on batches made by each model's pretraining dataset, against Hugging Face heads;
3. data.py throughput and peak RSS, and the pretraining loader's memory as the corpus grows;
4. sampling 256 tokens at batch 1 and 8 with our KV cache (eager and torch.compiled), against our
   recompute path and Hugging Face's generate;
5. (CUDA only) pretraining of the full-size config.json models in bf16: MFU.
"""
from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor, nn

from bench import classic, hf
from bench.inputs import SCALES, Inputs, StoreBuilder, StoreRun, run_measured
from bench.timing import (Measurement, interleaved, span_boundary_flops, time_once, trunk_flops,
                          vocab_head_flops)
from common.batches import length_bucketed_batches, random_batches
from common.config import ModelConfig, load_config
from common.device import Runtime
from common.paths import REPO_ROOT
from common.reviews import ReviewDataset
from common.token_store import TokenStore
from common.evaluation import to_device
from common.train_options import make_optimizer
from common.vocab import BOS_ID, PAD_ID

MAX_GRAD_NORM = 1.0  # common/trainer.py's default clipping, on both sides
WEIGHT_DECAY = 0.01
Log = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    reps: int  # timed repetitions of every contender (the report gives their median)
    finetune_batch: int  # reviews per fine-tuning batch
    finetune_batches: int  # length-bucketed batches per repetition (ours, Hugging Face)
    classic_batches: int  # random pad-to-longest batches per repetition (classic)
    pretrain_batch: int  # instances per pretraining batch
    pretrain_len: int  # tokens per pretraining instance (the stores' --n_seq)
    gen_tokens: int  # new tokens per generation
    loader_batches: int  # batches the loader probe collates
    warmup_steps: int  # untimed fine-tuning steps of every contender first (pretraining: one whole batch)
    matmul_sizes: tuple[int, ...]
    slice_mb: float  # kowiki slice for data.py (full run)
    workers: int  # data.py --workers
    seed: int = 42


@dataclass
class Context:
    inputs: Inputs
    settings: Settings
    runtime: Runtime
    stores: StoreBuilder
    peak_gflops: float  # the measured matmul rate the "% of matmul rate" columns divide by
    log: Log = print

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def config(self, model: str, file: str = "config_half.json") -> ModelConfig:
        return load_config(REPO_ROOT / model / file).with_vocab(len(self.inputs.vocab))


class Contender:
    """A model, how to get its loss from a batch, and its own AdamW (make_optimizer, as the trainer)."""

    def __init__(self, model: nn.Module, loss_of: Callable[[nn.Module, dict[str, Tensor]], Tensor],
                 runtime: Runtime, lr: float):
        self.model, self.loss_of, self.runtime = model.to(runtime.device).train(), loss_of, runtime
        self.optimizer = make_optimizer(model, lr, WEIGHT_DECAY, fused=runtime.device.type == "cuda")

    def step(self, batch: dict[str, Tensor]) -> None:
        with self.runtime.autocast():
            loss = self.loss_of(self.model, batch)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def ours_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    return model(**batch)[0]  # our models and the classic ones return (loss, ...)


def hf_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    return model(**batch).loss


# --- 1. fine-tuning ------------------------------------------------------------------------

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
    spec = importlib.import_module(f"{name}.train").SPEC
    cfg = ctx.config(name)
    reviews = [np.asarray(spec.wrap(ids, cfg.n_seq), dtype=np.int64) for ids in encoded]
    dataset = ReviewDataset(reviews, labels)
    # Each pipeline's first batches of an epoch over all reviews, as train.py would draw them.
    bucketed = length_bucketed_batches(dataset.lengths, s.finetune_batch, s.seed, epoch=0)[: s.finetune_batches]
    shuffled = random_batches(len(dataset), s.finetune_batch, s.seed, epoch=0)[: s.classic_batches]
    if not shuffled:
        raise ValueError(f"not one batch of {s.finetune_batch} among {len(dataset)} reviews")

    torch.manual_seed(s.seed)
    model = spec.build_model(cfg, spec.options())  # the defaults of train.py: GPT --lm 0, SpanBERT --logit cls
    with torch.no_grad():
        model.classifier.bias.zero_()  # OpenAIGPT's score has no bias: start both from the same function
    hf_model, attn = (hf.gpt_classifier if name == "gpt" else hf.bert_classifier)(model, cfg)
    first = to_device(dataset.collate(bucketed[0]), ctx.device)
    ours = Contender(model, ours_loss, rt, spec.default_lr)
    theirs = Contender(hf_model, hf_loss, rt, spec.default_lr)
    difference = hf.max_logit_difference(model, hf_model, first)
    old = Contender(classic.classifier(name, cfg), ours_loss, rt, spec.default_lr)

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


# --- 2. pretraining step -------------------------------------------------------------------

@dataclass
class PretrainResult:
    model: str
    config: str
    hf_class: str
    attn: str
    collate_ms: float  # our dataset's collate, per batch (not in the step times)
    ours: Measurement
    hf: Measurement


def pretraining_batches(ctx: Context, name: str, cfg: ModelConfig, n: int) -> tuple[list[dict[str, Tensor]], float]:
    """n batches drawn as the trainer draws them (random instances of the store through the model's
    pretraining dataset: windows for GPT, fresh masks for BERT / SpanBERT); and collate ms per batch."""
    spec = importlib.import_module(f"{name}.pretrain").SPEC
    dataset = spec.open_dataset(TokenStore(ctx.stores.build(name, 1).store), cfg)
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


def pretrain_case(ctx: Context, name: str, config_file: str = "config_half.json",
                  profile: bool = False) -> PretrainResult:
    s, rt = ctx.settings, ctx.runtime
    spec = importlib.import_module(f"{name}.pretrain").SPEC
    cfg = ctx.config(name, config_file)
    batches, collate_ms = pretraining_batches(ctx, name, cfg, s.reps + 1)
    hf_batches = [hf.pretraining_batch(name, b) for b in batches]
    torch.manual_seed(s.seed)
    ours = Contender(spec.build_model(cfg), ours_loss, rt, spec.default_lr)
    hf_model, attn = hf.pretraining_model(name, cfg)
    theirs = Contender(hf_model, hf_loss, rt, spec.default_lr)
    on_device = [to_device(b, ctx.device) for b in batches]
    hf_on_device = [to_device(b, ctx.device) for b in hf_batches]
    ours.step(on_device[0]), theirs.step(hf_on_device[0])  # warm-up (one whole batch is plenty)
    if profile:
        print_profile(ctx, f"{name} pretraining step (ours, {config_file})", lambda: ours.step(on_device[0]))
    B, T = batches[0]["input_ids"].shape
    ctx.log(f"  {name} ({config_file}): batches of {B} x {T}; HF {type(hf_model).__name__} ({attn}); "
            f"collate {collate_ms:.0f} ms/batch")
    times = interleaved({"ours": lambda r: ours.step(on_device[r + 1]),
                         "hf": lambda r: theirs.step(hf_on_device[r + 1])}, s.reps, ctx.device, ctx.log)
    timed = batches[1:]
    return PretrainResult(
        name, config_file, type(hf_model).__name__, attn, collate_ms,
        ours=Measurement("ours", times["ours"], [real_tokens(b) for b in timed],
                         [pretraining_flops(name, cfg, b, False) for b in timed]),
        hf=Measurement(f"HF {type(hf_model).__name__}", times["hf"], [real_tokens(b) for b in timed],
                       [pretraining_flops(name, cfg, b, True) for b in timed]),
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


# --- 3. data.py and the loader's memory ----------------------------------------------------

@dataclass
class DataResult:
    model: str
    runs: dict[int, StoreRun]  # scale -> data.py run
    loader: dict[int, dict[str, int]]  # scale -> loader probe output (peak_rss, peak_anon_rss, ...)

    @property
    def anon_growth(self) -> int:
        return self.loader[SCALES[-1]]["peak_anon_rss"] - self.loader[SCALES[0]]["peak_anon_rss"]

    @property
    def store_growth(self) -> int:
        return self.runs[SCALES[-1]].store_bytes - self.runs[SCALES[0]].store_bytes


def flat_tolerance(store_growth: int) -> int:
    """The loader's anonymous RSS counts as flat if it grows by less than this: a quarter of
    the store's growth (reading the store into memory would add all of it), at least 4 MB
    (allocator noise)."""
    return max(store_growth // 4, 4 * 2**20)


def data_case(ctx: Context, name: str) -> DataResult:
    runs = {scale: ctx.stores.build(name, scale) for scale in SCALES}

    def probe(scale: int) -> dict[str, int]:
        cmd = [sys.executable, "-m", "bench.loader_probe", "--model", name, "--store", str(runs[scale].store),
               "--config", str(REPO_ROOT / name / "config_half.json"), "--batch", str(ctx.settings.pretrain_batch),
               "--batches", str(ctx.settings.loader_batches), "--seed", str(ctx.settings.seed)]
        _, _, output = run_measured(cmd, REPO_ROOT, ctx.stores.workdir / f"loader_{name}_{scale}x.log")
        return json.loads(output.strip().splitlines()[-1])

    # The probes run side by side (untimed, each in its own process: their peaks do not mix).
    with ThreadPoolExecutor(len(SCALES)) as pool:
        loader = dict(zip(SCALES, pool.map(probe, SCALES)))
    for scale, run in runs.items():
        ctx.log(f"    loader on the {scale}x store ({run.store_bytes / 2**20:.1f} MB): peak RSS "
                f"{loader[scale]['peak_rss'] / 2**20:.0f} MB, anonymous {loader[scale]['peak_anon_rss'] / 2**20:.0f} MB")
    return DataResult(name, runs, loader)


# --- 4. generation -------------------------------------------------------------------------

# The prompts of the batch-8 runs (batch 1: the first). Their lengths differ: left-padded on both sides.
GENERATION_PROMPTS = ("대한민국의 수도는", "오늘 날씨가 좋아서", "이 영화는 정말", "서울에서 부산까지 가는 길에",
                      "한국어 자연어 처리는", "옛날 옛적에 어느 마을에", "인공지능의 미래는", "가장 좋아하는 음식은")
GENERATION_BATCHES = (1, 8)


@dataclass
class GenerationRun:
    batch: int
    prompt_tokens: list[int]  # each row's prompt length ([BOS] included)
    compile_seconds: float  # the first --compile call at this shape: compiling + one generation
    ours_cache: Measurement
    ours_compiled: Measurement
    hf_cache: Measurement
    ours_recompute: Measurement | None  # batch 1 only (each row is recomputed alone: batch 8 costs 8 x as long)


@dataclass
class GenerationResult:
    n_seq: int
    new_tokens: int
    hf_attn: str
    runs: list[GenerationRun]

    def run(self, batch: int) -> GenerationRun:
        return next(r for r in self.runs if r.batch == batch)


def generation_case(ctx: Context) -> GenerationResult:
    from gpt.model import GPTLMHeadModel

    s = ctx.settings
    all_prompts = [[BOS_ID, *ctx.inputs.vocab.encode(p)] for p in GENERATION_PROMPTS]
    half = ctx.config("gpt")
    # Room for the prompts and the new tokens: positions rounded up to a power of two (512 for 256 tokens).
    n_seq = max(half.n_seq, 1 << (max(map(len, all_prompts)) + s.gen_tokens - 1).bit_length())
    cfg = replace(half, n_seq=n_seq)
    torch.manual_seed(s.seed)
    ours = GPTLMHeadModel(cfg).to(ctx.device).eval()
    theirs, attn = hf.gpt2_lm(cfg)
    theirs = theirs.to(ctx.device).eval()
    ctx.log(f"  {s.gen_tokens} new tokens per row, top_k 40; batches of {', '.join(map(str, GENERATION_BATCHES))};"
            f" n_seq {n_seq}; HF GPT2LMHeadModel ({attn})")
    runs = [generation_run(ctx, ours, theirs, all_prompts[:batch]) for batch in GENERATION_BATCHES]
    return GenerationResult(n_seq, s.gen_tokens, attn, runs)


def generation_run(ctx: Context, ours: nn.Module, theirs: nn.Module, prompts: list[list[int]]) -> GenerationRun:
    """One batch of prompts: ours eager and compiled, Hugging Face, and (batch 1) our recompute, interleaved."""
    from gpt.generate import generate_batch

    s, n, batch = ctx.settings, ctx.settings.gen_tokens, len(prompts)
    generator = torch.Generator(device=ctx.device).manual_seed(s.seed)
    pads = [max(map(len, prompts)) - len(p) for p in prompts]
    # Hugging Face: left padding and its attention mask, as its generate expects for a decoder
    ids = torch.tensor([[PAD_ID] * pad + p for pad, p in zip(pads, prompts)], device=ctx.device)
    mask = torch.tensor([[0] * pad + [1] * len(p) for pad, p in zip(pads, prompts)], device=ctx.device)

    def ours_gen(k: int, cache: bool = True, compile: bool = False) -> None:
        with ctx.runtime.autocast():
            out = generate_batch(ours, prompts, k, top_k=40, use_cache=cache, generator=generator,
                                 stop_at_eos=False, compile=compile)
        assert [len(r) for r in out] == [k] * batch

    def hf_gen(k: int) -> None:
        with ctx.runtime.autocast():
            out = theirs.generate(ids, attention_mask=mask, max_new_tokens=k, min_new_tokens=k, do_sample=True,
                                  top_k=40, use_cache=True, pad_token_id=PAD_ID)
        assert out.shape == (batch, ids.shape[1] + k)

    # the compiled step is specialized to the cache's shape: its first call at n tokens compiles it
    compile_seconds = time_once(lambda: ours_gen(n, compile=True), ctx.device)
    ours_gen(8), hf_gen(8)  # warm-up
    contenders = {"cache": lambda r: ours_gen(n), "compiled": lambda r: ours_gen(n, compile=True),
                  "hf": lambda r: hf_gen(n)}
    if batch == 1:
        ours_gen(8, cache=False)
        contenders["recompute"] = lambda r: ours_gen(n, cache=False)
    ctx.log(f"  batch {batch}: prompts of {', '.join(str(len(p)) for p in prompts)} tokens;"
            f" --compile's first call {compile_seconds:.0f}s")
    times = interleaved(contenders, s.reps, ctx.device, ctx.log)
    tokens = [float(n * batch)] * s.reps
    return GenerationRun(
        batch, [len(p) for p in prompts], compile_seconds,
        ours_cache=Measurement("ours, KV cache", times["cache"], tokens),
        ours_compiled=Measurement("ours, KV cache, --compile", times["compiled"], tokens),
        hf_cache=Measurement("HF GPT2LMHeadModel.generate, cache", times["hf"], tokens),
        ours_recompute=(Measurement("ours, recompute (no cache)", times["recompute"], tokens)
                        if "recompute" in times else None))


# --- 5. CUDA: full-size models in bf16 -----------------------------------------------------

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
