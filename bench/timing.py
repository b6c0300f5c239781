"""Timers, medians, the machine's matmul rate, and the FLOP counts behind "% of matmul rate".

This machine is shared and noisy: a contender's repetitions are interleaved with
its baseline's (A B A B ...), so a burst of background load hits both alike, and
only medians and ratios from one run are reported.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from common.config import ModelConfig
from common.layers import flops_per_token


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of `fn` takes, GPU work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(contenders: dict[str, Callable[[int], object]], reps: int, device: torch.device,
                log: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Seconds of `reps` calls of each contender, in turns: rep r calls every contender with r."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(reps):
        for name, fn in contenders.items():
            times[name].append(time_once(lambda: fn(r), device))
        log("    rep %d/%d: %s" % (r + 1, reps, ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items())))
    return times


@dataclass
class Measurement:
    """Repetitions of one contender: seconds, units of work (tokens), FLOPs executed, per rep."""

    name: str
    seconds: list[float]
    work: list[float]  # what the rate counts (real tokens, new tokens), per rep
    flops: list[float] = field(default_factory=list)  # FLOPs executed per rep (empty: not counted)
    info: dict[str, object] = field(default_factory=dict)  # extra columns for the report

    @property
    def rate(self) -> float:
        """Median over reps of work / second."""
        return statistics.median(w / s for w, s in zip(self.work, self.seconds))

    @property
    def gflops(self) -> float | None:
        """Median over reps of GFLOP/s executed (None when FLOPs are not counted)."""
        if not self.flops:
            return None
        return statistics.median(f / s / 1e9 for f, s in zip(self.flops, self.seconds))


def matmul_rate(device: torch.device, dtype: torch.dtype, sizes: Sequence[int], reps: int) -> tuple[float, list[float]]:
    """(median GFLOP/s, every sample) of square matmuls of each size (2 n^3 FLOPs), after one warm-up each."""
    rates = []
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        time_once(lambda: a @ b, device)
        for _ in range(reps):
            rates.append(2 * n**3 / time_once(lambda: a @ b, device) / 1e9)
    return statistics.median(rates), rates


# --- FLOPs executed (training: forward + backward = 3 x forward) ----------------------------

def trunk_flops(cfg: ModelConfig, batch: int, seq_len: int) -> float:
    """The Transformer layers over a (batch, seq_len) input, padding included (it is computed too)."""
    return batch * seq_len * flops_per_token(cfg, seq_len, lm_head_tokens_ratio=0.0)


def vocab_head_flops(cfg: ModelConfig, rows: int, transform: bool = False, backward: bool = True) -> float:
    """A projection of `rows` hidden states onto the vocab (+ BERT's dense transform before it).
    backward=False: the forward only (logits computed but not in the loss, so autograd skips them)."""
    per_row = 2 * cfg.n_vocab * cfg.d_hidn + (2 * cfg.d_hidn**2 if transform else 0)
    return rows * per_row * (3 if backward else 1)


def span_boundary_flops(cfg: ModelConfig, rows: int) -> float:
    """SpanBERT's SBO head for `rows` targets: MLP 3D -> D -> D, then the vocab projection."""
    D = cfg.d_hidn
    return 3 * rows * 2 * (3 * D * D + D * D + cfg.n_vocab * D)
