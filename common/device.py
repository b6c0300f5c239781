"""Device selection and torch.distributed setup, one function for every script.

`--gpu` semantics: omitted -> CUDA device 0 if CUDA is present, else CPU;
`--gpu N` -> exactly cuda:N, or a clear error if it does not exist. Under
`torchrun` each rank takes its LOCAL_RANK GPU (and `--gpu` must be omitted);
the process group comes from torchrun's environment (MASTER_ADDR/PORT or its
rendezvous), so no address or port is fixed here.
"""
from __future__ import annotations

import atexit
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
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise UserError(f"torchrun started more processes on this node than it has GPUs ({count}): "
                            f"pass --nproc_per_node {count} or fewer")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, **_attempt_store(rank, world_size))
        atexit.register(_leave_process_group)
    return Runtime(device, rank, local_rank, world_size)


def _attempt_store(rank: int, world_size: int) -> dict:
    """Under torchrun --max-restarts, the rendezvous store of attempt N, in keys of its own.

    The elastic agent's store outlives a restart: without a prefix, a restarted worker can
    read the address a dead worker of the last attempt published and fail to connect
    ("Gloo connectFullMesh failed ... Connection refused"), so the restart itself fails."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None or "MASTER_ADDR" not in os.environ:
        return {}  # plain env:// rendezvous (not torchrun's elastic agent)
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # the agent hosts it, else rank 0
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=not agent_store and rank == 0, multi_tenant=not agent_store)
    return {"store": dist.PrefixStore(f"attempt_{attempt}", store), "rank": rank, "world_size": world_size}


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rank_seed(seed: int, rank: int) -> int:
    """A seed for rank `rank` of a run seeded with `seed`, independent of the other ranks' seeds."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def rng_state(device: torch.device) -> dict:
    """Every random generator a training process draws from, as checkpointable values."""
    mt, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": [version, list(py_state), py_gauss]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what `rng_state` returned (checkpoints of older versions hold only "torch" and "cuda")."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "python" in state:
        version, py_state, py_gauss = state["python"]
        random.setstate((version, tuple(py_state), py_gauss))
