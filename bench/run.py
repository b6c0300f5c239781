"""Run the benchmark suite and write its markdown report (bench/README.md).

    python -m bench.run                                   # full run: real data, ~12 min on 2 CPU cores
    python -m bench.run --quick --report /tmp/bench.md    # the shipped sample, about a minute (CI)
    python -m bench.run --cases 2 --models gpt --profile gpt

Cases: 1 fine-tuning on NSMC (bench/finetune.py: 1a vs Hugging Face on identical
batches, 1b vs the classic pad-to-longest pipeline), 2 pretraining step vs Hugging
Face heads (bench/pretrain.py), 3 data.py throughput and the loader's memory
(bench/data_memory.py), 4 generation with the KV cache (bench/generation.py),
5 (with --gpu) the full-size models in bf16 with their MFU (bench/pretrain.py).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench import hf
from bench.context import Context, Settings
from bench.data_memory import data_case
from bench.finetune import encode_reviews, finetune_case
from bench.generation import generation_case
from bench.inputs import MODELS, StoreBuilder, prepare
from bench.loop import loop_case
from bench.pretrain import gpu_case, pretrain_case
from bench.report import render
from bench.results import Results
from bench.timing import matmul_rate
from common.cli import REPO_ROOT, UserError, make_parser, positive_int, rel, run_main
from common.device import Runtime, select_device
from common.io import atomic_open

DEFAULT_REPORT = REPO_ROOT / "bench" / "README.md"
ALL_CASES = ("1", "2", "3", "4", "6")

# Full run: about 12 minutes on 2 CPU cores (the classic pipeline's padded batches take the most).
FULL = Settings(reps=3, finetune_batch=128, finetune_batches=6, classic_batches=2, pretrain_batch=32,
                      pretrain_len=256, gen_tokens=256, loader_batches=50, warmup_steps=2,
                      matmul_sizes=(1024, 1536, 2048), slice_mb=16.0, workers=os.cpu_count() or 1, loop_steps=8,
                      loop_reps=3)
# Quick run (CI): the sample corpus, small batches, few reps; proves every case runs.
QUICK = Settings(reps=2, finetune_batch=16, finetune_batches=2, classic_batches=1, pretrain_batch=4,
                       pretrain_len=64, gen_tokens=16, loader_batches=5, warmup_steps=1,
                       matmul_sizes=(256, 512), slice_mb=0.0, workers=1, loop_steps=3,
                       loop_reps=1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(runtime: Runtime) -> dict[str, str]:
    import transformers

    info = {"CPU": f"{cpu_model()}, {os.cpu_count()} cores", "torch threads": str(torch.get_num_threads())}
    if runtime.device.type == "cuda":
        info["GPU"] = torch.cuda.get_device_name(runtime.device)
    info["versions"] = (f"python {platform.python_version()}, torch {torch.__version__}, transformers "
                        f"{transformers.__version__}, numpy {np.__version__}")
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return info


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="sample corpus, small batches, few reps (about a minute; CI): proves it runs, not speed")
    parser.add_argument("--report", default=None,
                        help=f"markdown report to write; None: {rel(DEFAULT_REPORT)}, or printed only with --quick")
    parser.add_argument("--cases", default=",".join(ALL_CASES), help="cases to run, comma-separated (5 is added by --gpu)")
    parser.add_argument("--models", default=",".join(MODELS), help="models of cases 1-3, comma-separated")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help=f"data.py --workers; None: {FULL.workers}, or {QUICK.workers} with --quick")
    parser.add_argument("--reps", type=positive_int, default=None,
                        help=f"timed repetitions per contender; None: {FULL.reps}, or {QUICK.reps} with --quick")
    parser.add_argument("--slice_mb", type=float, default=FULL.slice_mb,
                        help="MB of kowiki.json for data.py (the loader check also uses 4x as much); not with --quick")
    parser.add_argument("--gpu", type=int, default=None,
                        help="run on this CUDA GPU under bf16 autocast, and add case 5; None: the CPU")
    parser.add_argument("--profile", choices=MODELS, default=None,
                        help="print torch.profiler's top ops of one pretraining step of this model")
    parser.add_argument("--workdir", default=None, help="folder for slices, vocab and stores; None: a temporary one, deleted at the end")
    return parser.parse_args()


def settings_from(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else replace(FULL, slice_mb=args.slice_mb)
    if not args.quick and not args.slice_mb > 0:
        raise UserError(f"--slice_mb must be > 0, got {args.slice_mb}")
    return replace(base, reps=args.reps or base.reps, workers=args.workers or base.workers)


def split_choice(text: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    chosen = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in chosen if x not in allowed]
    if bad or not chosen:
        raise UserError(f"{option} {text!r}: choose among {', '.join(allowed)}")
    return chosen


def main() -> None:
    args = parse_args()
    run_main(lambda: benchmark(args))


def benchmark(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    settings = settings_from(args)
    selected = set(split_choice(args.cases, ALL_CASES, "--cases"))
    models = split_choice(args.models, MODELS, "--models")
    hf.require_transformers()
    torch.set_num_threads(args.threads)
    runtime = Runtime(select_device(args.gpu) if args.gpu is not None else torch.device("cpu"))
    if runtime.device.type == "cuda":
        selected.add("5")
    report_path = Path(args.report) if args.report else (None if args.quick else DEFAULT_REPORT)
    if report_path is not None and not report_path.parent.is_dir():
        raise UserError(f"output folder does not exist: {report_path.parent} (create it, or pass another --report)")

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f}s] {message}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        log(f"{'quick' if args.quick else 'full'} run on {runtime.device}, {args.threads} threads; inputs in {workdir}")
        inputs = prepare(workdir, args.quick, settings.slice_mb)
        log(f"vocab {rel(inputs.vocab_path)} ({len(inputs.vocab):,} pieces); {len(inputs.reviews):,} reviews from "
            f"{inputs.reviews_source}; kowiki: {inputs.kowiki_source}")
        peak, peak_label = measure_peak(runtime, settings, log)
        stores = StoreBuilder(inputs, workdir, settings.pretrain_len, settings.workers, log)
        ctx = Context(inputs, settings, runtime, stores, peak, log)
        results = Results(machine_info(runtime), settings, args.quick,
                          " ".join(["python -m bench.run", *map(shlex.quote, sys.argv[1:])]), peak, peak_label,
                          selected=selected)
        run_cases(ctx, results, models, args.profile)
        results.minutes = (time.perf_counter() - start) / 60
    text = render(results)
    if report_path is None:
        print("\n" + text)
    else:
        with atomic_open(report_path) as f:
            f.write(text)
        log(f"report written to {report_path}")
    log(f"done in {results.minutes:.1f} min")
    if results.errors:
        raise UserError(f"case(s) {', '.join(sorted(results.errors))} failed (see above and the report)")


def measure_peak(runtime: Runtime, settings: Settings, log: Callable[[str], None]) -> tuple[float, str]:
    """The rate the "% of matmul rate" columns divide by: fp32 on the CPU; bf16 on CUDA (cases run under autocast)."""
    device = runtime.device
    if device.type == "cuda":
        fp32, _ = matmul_rate(device, torch.float32, (4096, 8192), settings.reps)
        bf16, _ = matmul_rate(device, torch.bfloat16, (4096, 8192), settings.reps)
        log(f"matmul rate: fp32 {fp32:,.0f} GFLOP/s, bf16 {bf16:,.0f} GFLOP/s")
        return bf16, "bf16 matmul rate (median of 4096 and 8192 square matmuls)"
    rate, samples = matmul_rate(device, torch.float32, settings.matmul_sizes, settings.reps + 2)
    sizes = ", ".join(map(str, settings.matmul_sizes))
    log(f"matmul rate: fp32 {rate:,.1f} GFLOP/s (median of {len(samples)}: sizes {sizes})")
    return rate, f"fp32 matmul rate (median of {len(samples)} square matmuls of {sizes})"


def run_cases(ctx: Context, results: Results, models: tuple[str, ...], profile: str | None) -> None:
    """Each case in turn; a failing case is reported (and fails the run at the end) without losing the others."""

    def attempt(case: str, title: str, body: Callable[[], None]) -> None:
        if case not in results.selected:
            return
        ctx.log(f"case {case}: {title}")
        try:
            body()
        except (KeyboardInterrupt, UserError):
            raise
        except Exception as e:  # noqa: BLE001 - reported in the report, and the run exits non-zero
            traceback.print_exc()
            results.errors[case] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"

    def finetune() -> None:
        encoded, labels = encode_reviews(ctx)
        for name in models:
            results.finetune.append(finetune_case(ctx, name, encoded, labels))

    def pretrain() -> None:
        for name in models:
            results.pretrain.append(pretrain_case(ctx, name, profile=profile == name))

    def data() -> None:
        for name in models:
            results.data.append(data_case(ctx, name))

    def generation() -> None:
        results.generation = generation_case(ctx)

    def loop() -> None:
        for name in models:
            results.loop.append(loop_case(ctx, name))

    def gpu() -> None:
        results.gpu = gpu_case(ctx, models)

    attempt("1", "fine-tuning on NSMC (1a vs Hugging Face, 1b vs the classic pipeline)", finetune)
    attempt("2", "pretraining step vs Hugging Face heads", pretrain)
    attempt("3", "data.py throughput and the loader's memory", data)
    attempt("4", "generation", generation)
    attempt("5", "CUDA: config.json pretraining in bf16 (MFU)", gpu)
    attempt("6", "the training loop: waiting for data with a slowed collate, compiled graphs", loop)
    if profile and ("2" not in results.selected or profile not in models):
        ctx.log(f"profile: {profile} pretraining step")
        pretrain_case(ctx, profile, profile=True)


if __name__ == "__main__":
    main()
