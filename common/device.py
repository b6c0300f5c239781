"""Device selection and torch.distributed setup, one function for every script.

`--gpu` semantics: omitted -> CUDA device 0 if CUDA is present, else CPU;
`--gpu N` -> exactly cuda:N, or a clear error if it does not exist. Under
`torchrun` each rank takes its LOCAL_RANK GPU (and `--gpu` must be omitted).
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from common.cli import UserError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA; plain fp32 elsewhere."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def select_device(gpu: int | None) -> torch.device:
    if gpu is None:
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if gpu < 0:
        raise UserError(f"--gpu must be >= 0, got {gpu} (omit it to pick automatically)")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpu >= count:
        have = f"GPUs 0-{count - 1}" if count else "no CUDA GPU"
        raise UserError(f"--gpu {gpu} does not exist: this machine has {have} (omit --gpu to use {'cuda:0' if count else 'the CPU'})")
    return torch.device("cuda", gpu)


def setup_runtime(gpu: int | None) -> Runtime:
    """Pick the device; under torchrun also join the process group (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Runtime(select_device(gpu))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if gpu is not None:
        raise UserError("--gpu cannot be combined with torchrun: each rank uses its LOCAL_RANK GPU (drop --gpu)")
    if torch.cuda.is_available():
        device = select_device(local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Runtime(device, rank, local_rank, world_size)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
