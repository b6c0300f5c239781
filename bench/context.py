"""What every benchmark case shares: the run's settings, its context, and a contender's training step."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench.inputs import Inputs, StoreBuilder
from common.cli import REPO_ROOT
from common.config import ModelConfig, load_config
from common.device import Runtime
from common.trainer import make_optimizer

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
    loop_steps: int  # optimizer steps of each timed training loop (case 6)
    loop_reps: int  # interleaved repetitions of case 6's unslowed loops
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
