"""A benchmark run's results: bench/run.py fills them, bench/targets.py judges them, bench/report.py writes them."""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.context import Settings
from bench.data_memory import DataResult
from bench.finetune import FinetuneResult
from bench.generation import GenerationResult
from bench.loop import LoopResult
from bench.pretrain import GpuResult, PretrainResult

MB = 2**20  # the unit of the report's memory and corpus sizes


@dataclass
class Results:
    """Everything one run measured; a case that did not run is None (or empty), one that failed has an error."""

    machine: dict[str, str]
    settings: Settings
    quick: bool
    command: str
    peak_gflops: float
    peak_label: str
    finetune: list[FinetuneResult] = field(default_factory=list)
    pretrain: list[PretrainResult] = field(default_factory=list)
    data: list[DataResult] = field(default_factory=list)
    generation: GenerationResult | None = None
    gpu: GpuResult | None = None
    loop: list[LoopResult] = field(default_factory=list)
    selected: set[str] = field(default_factory=set)  # cases run: "1" ... "6"
    errors: dict[str, str] = field(default_factory=dict)  # case -> error message
    minutes: float = 0.0
