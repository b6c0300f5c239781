"""Case 3, each model's data.py (throughput, peak RSS) and the pretraining loader's memory as the corpus grows."""
from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench.context import Context
from bench.inputs import SCALES, StoreRun, run_measured
from common.cli import REPO_ROOT


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
