"""Device selection and torch.distributed setup, one function for every script.

`--gpu` semantics: omitted -> CUDA device 0 if CUDA is present, else CPU;
`--gpu N` -> exactly cuda:N, or a clear error if it does not exist. Under
`torchrun` each rank takes its LOCAL_RANK GPU (and `--gpu` must be omitted);
the process group comes from torchrun's environment (MASTER_ADDR/PORT or its
rendezvous), so no address or port is fixed here.

Distributed training (torchrun; `common.device.setup_runtime` joins the group):
- `batch_size` is the global batch. Every rank builds the same batch plan and
  collates only its slice of each global batch (np.array_split over ranks, then
  over --grad_accum micro-batches), so it reads only its shard of the memory-
  mapped data. Each micro-batch's loss is weighted by its share of the global
  batch, so after DDP averages over ranks the gradient is the gradient of the
  global batch's mean loss whatever the split: exact when the loss is a mean
  over instances (GPT pretraining: every window has n_seq targets; the NSMC
  classifier); a loss averaged over a varying number of tokens per instance
  (MLM, the auxiliary LM loss) gets the usual DDP approximation, each
  micro-batch's token mean weighted by its instances.
- Every trainable parameter must take part in every forward pass: DDP is built
  without `find_unused_parameters` (that costs an extra traversal per step), so
  a parameter with requires_grad that gets no gradient breaks the next step.
  Freeze what a model does not train (`requires_grad_(False)`, as SpanBERT's
  pooler in pretraining); the first step checks it and names any offender.
- Randomness: all ranks seed alike before the model is built (identical
  initialization; DDP also broadcasts rank 0's weights); then ranks > 0 reseed
  from (seed, rank), so their dropout masks are independent of rank 0's, while
  rank 0 draws exactly what a single process would. With dropout > 0 a run on
  N ranks therefore differs from a single-process run (an instance's dropout
  mask depends on the rank it lands on); with dropout 0 the weights agree up to
  float rounding (tests/test_distributed.py). Every rank's RNG state is
  gathered into the checkpoint, so resuming on the same number of ranks is exact.
- Only rank 0 writes checkpoints (every rank contributes its RNG and metric
  sums), logs and plots. A stop request (signal) is agreed on by all ranks
  after each step, so they stop after the same step.
- Evaluation spreads whole batches over the ranks and sums (sum, count) pairs
  over all of them: the result is the same for any number of ranks, also when
  the batches do not divide evenly (a rank may get none). Batch i draws its
  randomness (BERT's masks) from a generator seeded by i, not from the training
  stream, so held-out numbers are comparable between epochs and world sizes and
  evaluating does not change the training run.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

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
        atexit.register(leave_process_group, wait=False)  # a rank ending on an error: close without waiting
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


def leave_process_group(wait: bool = True) -> None:
    """Close this process's group, if it has one, while the interpreter is whole.

    wait: first wait for every peer (a barrier). common.cli.run_main does so after a rank's main()
    ended as every rank's does (done, or stopped at the same step): a rank that closed gloo while a
    peer still talked to it, or left it to interpreter teardown, could abort at exit ("terminate
    called without an active exception"). The atexit handler passes wait=False: a rank ending on an
    error has peers that may never reach a barrier."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
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


def gather_objects(obj: Any, runtime: Runtime) -> list[Any]:
    """`obj` of every rank, in rank order (a collective: every rank must call it)."""
    if not runtime.distributed:
        return [obj]
    out: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, runtime: Runtime) -> bool:
    """True on every rank when `flag` is true on at least one (a collective)."""
    if not runtime.distributed:
        return flag
    t = torch.tensor([int(flag)], device=runtime.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def check_every_parameter_trained(model: nn.Module, runtime: Runtime) -> None:
    """After the first backward: a trainable parameter without a gradient breaks DDP (see above)."""
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if not unused:
        return
    message = (f"parameters with requires_grad got no gradient: {', '.join(unused[:5])}"
               f"{' ...' if len(unused) > 5 else ''}; freeze them with requires_grad_(False) in the model")
    if runtime.distributed:
        raise RuntimeError(message + " (DistributedDataParallel needs every trained parameter used)")
    print(f"warning: {message} (harmless here, but training under torchrun would fail)", file=sys.stderr)


def restore_rank_state(state: dict, path: Path, runtime: Runtime, seed: int) -> tuple[dict[str, list[float]], list]:
    """This rank's part of a training checkpoint: (its epoch metric sums, its step-log window), with its RNG
    restored. Written by another number of ranks, the run goes on but not bit-exactly: rank 0 takes all the
    saved sums (their total is what counts), and a rank without a saved RNG reseeds from (seed, rank)."""
    ranks = state.get("ranks") or [{"rng": state["rng"], "totals": {}}]  # older checkpoints: rank 0's RNG only
    if len(ranks) == runtime.world_size:
        mine = ranks[runtime.rank]
        totals = {k: list(v) for k, v in mine["totals"].items()}
        window = list(mine.get("window", [0.0, 0, 0]))
    else:
        if runtime.is_main:
            print(f"warning: {path} was written by {len(ranks)} rank(s), this run has {runtime.world_size}: the "
                  f"dropout RNG of the ranks is redistributed, so the run goes on but not bit-exactly as it would "
                  f"have", file=sys.stderr)
        mine = ranks[runtime.rank] if runtime.rank < len(ranks) else None
        totals, window = {}, [0.0, 0, 0]
        for r in ranks if runtime.is_main else []:
            for name, (s, c) in r["totals"].items():
                acc = totals.setdefault(name, [0.0, 0.0])
                acc[0], acc[1] = acc[0] + float(s), acc[1] + float(c)
    if mine is not None:
        set_rng_state(mine["rng"], runtime.device)
    else:
        torch.manual_seed(rank_seed(seed, runtime.rank))
    return totals, window


def use_deterministic_algorithms() -> None:
    """Deterministic kernels on CUDA (`--deterministic`): torch raises on an op that has none, and cuBLAS
    gets the fixed workspace its deterministic mode needs (the variable must be set before CUDA starts).
    With it, a resumed GPU run repeats the uninterrupted one exactly, as a CPU run always does."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
