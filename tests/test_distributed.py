"""Distributed training under torchrun: 2 CPU processes with gloo, through the real pretrain.py.

- For the same seed and global --batch, 2 ranks (each also accumulating 2
  micro-batches) end with the weights of a single process, and the same train
  and held-out metrics. Dropout is 0 here: with dropout, an instance's mask
  depends on the rank it lands on (ranks > 0 draw from their own seeds, see
  common/trainer.py), so only the dropout-free computation can match.
- A SIGTERM to torchrun mid-run stops both ranks after the same step with one
  checkpoint; --resume under torchrun then ends with exactly the weights of an
  uninterrupted 2-rank run, with dropout on: every rank's RNG is checkpointed.
- Elastic restart: under torchrun --max-restarts 1, a worker killed with SIGKILL
  makes torchrun restart both; with --resume auto they pick up the newest
  checkpoint and end with the weights of the uninterrupted run.

torchrun is started as `python -m torch.distributed.run --standalone`, which is
the c10d rendezvous on localhost with a free port (no fixed port).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.checkpoint import load_checkpoint
from common.cli import REPO_ROOT
from common.config import ModelConfig
from common.device import Runtime
from common.io import read_csv
from common.token_store import TokenStore
from common.trainer import Trainer, TrainSettings, random_batches
from gpt.model import GPTLMHeadModel
from gpt.pretrain import WindowDataset

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def start_torchrun(env: dict[str, str], *args: str, script: str = "pretrain.py") -> subprocess.Popen:
    # A session of its own: should a test time out, its workers go down with torchrun (see finish).
    return subprocess.Popen([*TORCHRUN, script, *map(str, args)], cwd=REPO_ROOT / "gpt", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    """Wait for torchrun; on a timeout kill its whole process group, workers included."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torchrun starts each worker in a session of its own: kill them by name, then torchrun's group
        for pid in descendants(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"torchrun timed out after {timeout}s:\n{out[-2000:]}\n{err[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture()
def run_torchrun(script_env: dict[str, str]):
    def run(*args: str) -> subprocess.CompletedProcess:
        done = finish(start_torchrun(script_env, *args))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        return done

    return run


def assert_same_weights(a: Path, b: Path, atol: float, rtol: float) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=rtol, msg=name)


def log(path: Path) -> list[dict]:
    return json.loads(path.with_suffix(".log.json").read_text())


def test_two_ranks_give_the_weights_of_one_process(tmp_path: Path, gpt_store: Path, sample_vocab: Path,
                                                   write_config, run_script, run_torchrun) -> None:
    config = write_config(tmp_path / "tiny.json", dropout=0.0)
    # 4 held-out windows < --batch: one evaluation batch, so rank 1 evaluates none and must still take part.
    common = ["--input", gpt_store, "--vocab", sample_vocab, "--config", config, "--batch", "8", "--epoch", "1",
              "--max_steps", "6", "--lr", "1e-3", "--save_every", "0", "--heldout", "0.01"]
    single = run_script("pretrain.py", *common, "--save", tmp_path / "single.pth")
    assert single.returncode == 0, single.stderr[-3000:]
    dist = run_torchrun(*common, "--grad_accum", "2", "--save", tmp_path / "dist.pth")

    assert "6 steps of 8" in single.stdout and "6 steps of 8" in dist.stdout  # --batch is the global batch
    assert dist.stdout.count("epoch 1:") == 1 and dist.stdout.count("saved ") == 1  # only rank 0 reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist.log.json", "dist.pth", "dist.steps.csv",
                                                          "single.log.json", "single.pth", "single.steps.csv",
                                                          "tiny.json"]
    # The step log sums the ranks' losses and tokens: the same points as one process.
    steps_one, steps_two = read_csv(tmp_path / "single.steps.csv"), read_csv(tmp_path / "dist.steps.csv")
    assert [(r["step"], r["tokens"]) for r in steps_two] == [(r["step"], r["tokens"]) for r in steps_one] != []
    assert [float(r["train_loss"]) for r in steps_two] == pytest.approx([float(r["train_loss"]) for r in steps_one],
                                                                        rel=1e-5)
    assert len(load_checkpoint(tmp_path / "dist.pth")["ranks"]) == 2
    # Sums of the same numbers in another order: equal up to float rounding.
    assert_same_weights(tmp_path / "single.pth", tmp_path / "dist.pth", atol=1e-5, rtol=1e-4)
    one, two = log(tmp_path / "single.pth")[-1], log(tmp_path / "dist.pth")[-1]
    for key in ("train_loss", "train_acc", "heldout_loss", "heldout_acc"):
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key


def test_sigterm_and_resume_under_torchrun_is_exact(tmp_path: Path, gpt_store: Path, sample_vocab: Path,
                                                    write_config, run_torchrun, script_env) -> None:
    config = write_config(tmp_path / "tiny.json", dropout=0.1)  # dropout on: the ranks' RNG must be restored
    common = ["--input", gpt_store, "--vocab", sample_vocab, "--config", config, "--batch", "8", "--epoch", "1",
              "--max_steps", "30", "--lr", "1e-3", "--save_every", "2"]
    run_torchrun(*common, "--save", tmp_path / "reference.pth")

    save = tmp_path / "run.pth"
    process = start_torchrun(script_env, *common, "--save", save)
    deadline = time.monotonic() + 240
    while not save.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)  # to torchrun alone, which passes it on to both ranks
    done = finish(process, timeout=120)
    out, err = done.stdout, done.stderr
    assert "stopped: SIGTERM at step" in err, out[-2000:] + err[-4000:]
    assert err.count("stopped: SIGTERM") == 1  # said once, by rank 0
    state = load_checkpoint(save)
    assert 2 <= state["progress"]["global_step"] < 30 and len(state["ranks"]) == 2

    resumed = run_torchrun(*common, "--save", save, "--resume")
    assert "resuming at epoch 1" in resumed.stdout
    assert_same_weights(tmp_path / "reference.pth", save, atol=0, rtol=0)
    reference, after = log(tmp_path / "reference.pth")[-1], log(save)[-1]
    for key in ("train_loss", "train_acc", "heldout_loss"):  # the epoch's metric sums were checkpointed too
        assert after[key] == reference[key], key


@pytest.mark.parametrize("lm", ["0", "0.5"])
def test_gpt_finetuning_under_torchrun(lm: str, tmp_path: Path, gpt_store: Path, sample_corpus, sample_vocab: Path,
                                       write_config, run_torchrun, script_env) -> None:
    """Two gloo ranks fine-tune GPT from a pretraining checkpoint: at --lm 0 no parameter goes unused (the LM
    head is not built; its bias used to break DDP's first step), at --lm 0.5 the pretrained LM head trains too."""
    config = write_config(tmp_path / "tiny.json", dropout=0.0)
    run_torchrun("--input", gpt_store, "--vocab", sample_vocab, "--config", config, "--batch", "8", "--epoch", "1",
                 "--max_steps", "2", "--save", tmp_path / "pre.pth")
    done = finish(start_torchrun(script_env, "--pretrain", tmp_path / "pre.pth", "--lm", lm, "--vocab", sample_vocab,
                                 "--config", config, "--train", sample_corpus["train"], "--test", sample_corpus["test"],
                                 "--epoch", "1", "--batch", "16", "--save", tmp_path / "best.pth",
                                 "--results", tmp_path / "results.csv", script="train.py"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "got no gradient" not in done.stderr
    rows = read_csv(tmp_path / "results.csv")
    assert len(rows) == 1 and rows[0]["variant"] == f"lm={lm}" and rows[0]["pretrain"] == "pre.pth@2steps"
    weights = load_checkpoint(tmp_path / "best.pth", fallback=False)["model"]
    assert ("lm_head.bias" in weights) == (lm == "0.5")


def test_unused_parameter_is_named(tmp_path: Path, gpt_store: Path, capsys) -> None:
    """DDP needs every trainable parameter used; the first step names one that is not."""
    cfg = ModelConfig(n_layer=1, d_hidn=16, n_head=2, d_ff=32, n_seq=32, dropout=0.0, n_vocab=9000)
    model = GPTLMHeadModel(cfg)
    model.unused = torch.nn.Linear(2, 2)
    data = WindowDataset(TokenStore(gpt_store), cfg)
    trainer = Trainer(model, TrainSettings(epochs=1, batch_size=4, lr=1e-3), Runtime(torch.device("cpu")), 1,
                      tmp_path / "ckpt.pth")
    trainer.step(trainer.make_batch(data, random_batches(len(data), 4, 0, 0)[0], step=0))
    err = capsys.readouterr().err
    assert "unused.weight, unused.bias" in err and "torchrun" in err


def test_run_main_closes_the_process_group_when_main_ends(tmp_path: Path) -> None:
    """A rank leaves the group (a barrier, then destroy) before interpreter teardown, not in it."""
    import torch.distributed as dist

    from common.cli import run_main
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        run_main(lambda: None)
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...)."""
    found, todo = [], [pid]
    while todo:
        children = worker_pids(todo.pop())
        found += children
        todo += children
    return found


def worker_pids(parent: int) -> list[int]:
    """The processes whose parent is `parent` (torchrun's workers), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def test_elastic_restart_after_a_killed_worker_resumes_on_its_own(tmp_path: Path, gpt_store: Path, sample_vocab: Path,
                                                                  write_config, run_torchrun, script_env) -> None:
    """torchrun --max-restarts 1: a worker SIGKILLed mid-run makes torchrun restart both; with --resume auto they
    continue from the newest checkpoint and end with the weights of an uninterrupted run (dropout on)."""
    config = write_config(tmp_path / "tiny.json", dropout=0.1)
    common = ["--input", gpt_store, "--vocab", sample_vocab, "--config", config, "--batch", "8", "--epoch", "1",
              "--max_steps", "30", "--lr", "1e-3", "--save_every", "2", "--resume", "auto"]
    run_torchrun(*common, "--save", tmp_path / "reference.pth")

    save = tmp_path / "run.pth"
    process = subprocess.Popen([*TORCHRUN, "--max-restarts=1", "pretrain.py", *map(str, common), "--save", str(save)],
                               cwd=REPO_ROOT / "gpt", env=script_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not save.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = worker_pids(process.pid)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    done = finish(process, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "resuming at epoch 1" in done.stdout  # the restarted workers found the checkpoint themselves
    assert "connectFullMesh failed" not in done.stderr  # the restart's rendezvous read no dead worker's address
    state = load_checkpoint(save)
    assert state["progress"]["global_step"] == 30
    assert_same_weights(tmp_path / "reference.pth", save, atol=0, rtol=0)
