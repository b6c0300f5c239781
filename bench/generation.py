"""Case 4, sampling 256 tokens at batch 1 and 8 with our KV cache (eager and torch.compiled),
against our recompute path and Hugging Face's generate."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from bench import hf
from bench.context import Context
from bench.timing import Measurement, interleaved, time_once
from common.vocab import BOS_ID, PAD_ID

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
