"""Faults: a killed, stopped or damaged run, through the real gpt/pretrain.py on the sample corpus.

- SIGKILL mid-epoch after a checkpoint appears, then --resume: the final weights
  (and the logged metrics) are those of an uninterrupted run, with dropout on.
- SIGTERM / Ctrl-C: a checkpoint is saved, exit code 143 / 130, one "stopped:"
  line and no traceback; --resume then finishes exactly as well.
- A truncated newest checkpoint: --resume warns and continues from `.prev`
  (same final weights); without a `.prev` it is refused with exit code 2.
- Saves are atomic: a failed write leaves the old file, and the previous
  checkpoint exists at every instant.
- A full disk (a file-size limit set with setrlimit, so writes fail as on a full
  disk) during a checkpoint save, a fine-tuning save and data.py's store: one
  line naming the file and what is intact, exit code 2, no temporary file left.
- A second run on the same --save is refused (the lock names the holder); a
  killed run's lock blocks nothing and its temporaries are removed; --resume auto.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.checkpoint import load_checkpoint, prev_path, save_checkpoint
from common.cli import REPO_ROOT
from common.io import atomic_open, exclusive_output, lock_path

# 194 train windows of the sample (--heldout 0.45): 24 steps of 8 per epoch; 30 steps in all, so
# the runs below cross an epoch end after resuming and stop mid-epoch 2.
OPTIONS = ["--batch", "8", "--epoch", "2", "--max_steps", "30", "--lr", "1e-3", "--heldout", "0.45",
           "--save_every", "2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, gpt_store: Path, sample_vocab: Path, write_config, run_script) -> dict:
    folder = tmp_path_factory.mktemp("faults")
    config = write_config(folder / "tiny.json", dropout=0.1)  # dropout on: the RNG must be restored
    args = ["--input", gpt_store, "--vocab", sample_vocab, "--config", config, *OPTIONS]
    reference = folder / "reference.pth"
    done = run_script("pretrain.py", *args, "--save", reference)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"args": [str(a) for a in args], "reference": reference}


def assert_same_as_reference(save: Path, setup: dict) -> None:
    expected = load_checkpoint(setup["reference"])
    got = load_checkpoint(save)
    assert got["progress"] == expected["progress"]
    for name, value in expected["model"].items():
        torch.testing.assert_close(got["model"][name], value, atol=0, rtol=0, msg=name)
    # The per-epoch log too (the metric sums of an interrupted epoch are in the checkpoint).
    for old, new in zip(expected["history"], got["history"], strict=True):
        assert {k: v for k, v in new.items() if k not in ("time_s", "tokens_per_s")} == \
               {k: v for k, v in old.items() if k not in ("time_s", "tokens_per_s")}


def interrupt(save: Path, setup: dict, script_env: dict, signum: int) -> subprocess.CompletedProcess:
    """Start pretraining, wait for its first checkpoint, send `signum`; return the finished process."""
    command = [sys.executable, "pretrain.py", *setup["args"], "--save", str(save)]
    process = subprocess.Popen(command, cwd=REPO_ROOT / "gpt", env=script_env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not save.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert save.exists(), err[-3000:]
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def resume(save: Path, setup: dict, run_script) -> subprocess.CompletedProcess:
    done = run_script("pretrain.py", *setup["args"], "--save", save, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming at epoch" in done.stdout
    return done


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path: Path, setup: dict, script_env,
                                                               run_script) -> None:
    save = tmp_path / "run.pth"
    killed = interrupt(save, setup, script_env, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    progress = load_checkpoint(save)["progress"]
    assert progress["epoch"] == 0 and 0 < progress["step_in_epoch"] < 24  # mid-epoch
    resume(save, setup, run_script)
    assert_same_as_reference(save, setup)


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path: Path, setup: dict, script_env, run_script,
                                                     signum: int, exit_code: int) -> None:
    """Ctrl-C and SIGTERM take the same path; only SIGTERM's run is resumed (to keep the test short)."""
    save = tmp_path / "run.pth"
    stopped = interrupt(save, setup, script_env, signum)
    assert stopped.returncode == exit_code, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    step = load_checkpoint(save)["progress"]["global_step"]
    assert last == (f"stopped: {signal.Signals(signum).name} at step {step}: checkpoint saved to {save}; "
                    f"run the same command with --resume to continue")
    if signum == signal.SIGTERM:
        resume(save, setup, run_script)
        assert_same_as_reference(save, setup)


def test_truncated_checkpoint_falls_back_to_previous_or_is_refused(tmp_path: Path, setup: dict, script_env,
                                                                   run_script) -> None:
    save = tmp_path / "run.pth"
    interrupt(save, setup, script_env, signal.SIGKILL)
    if not prev_path(save).exists():  # killed right after the first checkpoint: take one more step's worth
        shutil.copy(save, prev_path(save))
    data = save.read_bytes()
    save.write_bytes(data[: len(data) // 3])  # as a crash of the disk or a partial copy would leave it

    # Without .prev: refused, named, nothing changed.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(save, alone / "run.pth")
    done = run_script("pretrain.py", *setup["args"], "--save", alone / "run.pth", "--resume")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint {alone / 'run.pth'} is damaged"), done.stderr
    assert (alone / "run.pth").read_bytes() == data[: len(data) // 3]

    # With .prev: a warning naming both, then training continues from it to the same end.
    done = resume(save, setup, run_script)
    assert f"warning: {save} is damaged" in done.stderr and f"using the previous checkpoint {prev_path(save)}" in done.stderr
    assert_same_as_reference(save, setup)


def test_save_keeps_previous_at_every_instant(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, {"model": {"w": torch.ones(1)}})
    seen = []
    real_replace = __import__("os").replace

    def watching_replace(src, dst):  # the rename that publishes the new file
        seen.append((path.exists(), load_checkpoint(prev_path(path), fallback=False)["model"]["w"].item()))
        return real_replace(src, dst)

    monkeypatch.setattr("common.io.os.replace", watching_replace)
    save_checkpoint(path, {"model": {"w": torch.zeros(1)}})
    assert seen == [(True, 1.0)]  # just before the rename: the old file under both names
    assert load_checkpoint(path)["model"]["w"].item() == 0.0


def test_checkpoint_missing_but_previous_present(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ckpt.pth"
    save_checkpoint(prev_path(path), {"model": {"w": torch.ones(1)}}, keep_previous=False)
    assert load_checkpoint(path)["model"]["w"].item() == 1.0
    assert "is missing; using the previous checkpoint" in capsys.readouterr().err


def test_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            json.dump({"new": 1}, f)
            raise RuntimeError("disk full")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


# --- a full disk, a second run on the same output, leftovers of a killed save --------------------

def file_size_limit(limit: int):
    """preexec_fn: files may grow to `limit` bytes; a longer write fails with EFBIG ("File too large"),
    as on a full disk, instead of the SIGXFSZ that would kill the process."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def run_limited(script: str, args: list, limit: int, script_env: dict, cwd: Path = REPO_ROOT / "gpt") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=cwd, env=script_env, capture_output=True,
                          text=True, timeout=240, preexec_fn=file_size_limit(limit))


def only_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and done.stderr.strip().splitlines()[-1] == errors[0], done.stderr[-3000:]
    return errors[0]


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def test_full_disk_during_a_checkpoint_save_keeps_the_last_one(tmp_path: Path, setup: dict, script_env,
                                                               run_script) -> None:
    save = tmp_path / "run.pth"
    interrupt(save, setup, script_env, signal.SIGTERM)
    before, step = save.read_bytes(), load_checkpoint(save)["progress"]["global_step"]

    # the resumed run's next save cannot fit: one line saying which checkpoint is intact, nothing replaced
    done = run_limited("pretrain.py", [*setup["args"], "--save", save, "--resume"], len(before) // 2, script_env)
    assert only_error_line(done) == (f"error: no space left writing {save} (File too large): the last checkpoint "
                                     f"(step {step}) is intact; free space, then run the same command with --resume")
    assert save.read_bytes() == before and temporaries(tmp_path) == []
    resume(save, setup, run_script)  # "then run the same command with --resume": it ends as if never stopped
    assert_same_as_reference(save, setup)


def test_full_disk_in_fine_tuning_and_in_data_py(tmp_path: Path, sample_corpus: dict, sample_vocab: Path,
                                                 write_config, run_script, script_env) -> None:
    config = write_config(tmp_path / "tiny.json", dropout=0.0)
    args = ["--pretrain", "none", "--vocab", sample_vocab, "--config", config, "--train", sample_corpus["train"],
            "--test", sample_corpus["test"], "--epoch", "1", "--batch", "16"]
    full = tmp_path / "full"
    full.mkdir()
    done = run_script("train.py", *args, "--save", full / "best.pth", "--results", full / "results.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    model_bytes, state_bytes = (full / "best.pth").stat().st_size, (full / "best.state.pth").stat().st_size
    assert model_bytes < state_bytes  # the training state holds the optimizer's moments too

    # room for the best model, not for the training state written after it: nothing was checkpointed yet
    out = tmp_path / "out"
    out.mkdir()
    done = run_limited("train.py", [*args, "--save", out / "best.pth", "--results", out / "results.csv"],
                       (model_bytes + state_bytes) // 2, script_env)
    assert only_error_line(done) == (f"error: no space left writing {out / 'best.state.pth'} (File too large): "
                                     f"no checkpoint of this run was written yet; free space, then run the same command")
    assert temporaries(out) == [] and not (out / "results.csv").exists()

    # data.py: the store is written under a temporary name; a failed write leaves no store and no temporary
    store = tmp_path / "store"
    done = run_limited("data.py", ["--input", sample_corpus["kowiki"], "--output", store, "--vocab", sample_vocab,
                                   "--n_seq", "32", "--workers", "1"], 4096, script_env)
    assert only_error_line(done) == (f"error: no space left writing {store} (File too large): no store was written "
                                     f"there (the partial one is removed); free space, then run the same command")
    assert not store.exists() and temporaries(tmp_path) == []


def test_a_second_run_on_one_save_is_refused_and_a_dead_ones_lock_is_not(tmp_path: Path, setup: dict,
                                                                         script_env, run_script) -> None:
    save = tmp_path / "run.pth"
    with exclusive_output(save):  # this test process is "the other run"
        done = run_script("pretrain.py", *setup["args"], "--save", save)
    assert only_error_line(done) == (f"error: {save} is being written by another run (pid {os.getpid()} on "
                                     f"{socket.gethostname()}); wait for it to finish, or pass another --save")
    assert not save.exists()

    # A run killed while it held the lock (and while saving: its temporaries are left) blocks nothing.
    killed = subprocess.run([sys.executable, "-c", "import os, signal, sys; from common.io import exclusive_output; "
                             "lock = exclusive_output(sys.argv[1]); lock.__enter__(); os.kill(os.getpid(), signal.SIGKILL)",
                             str(save)], env=script_env)
    assert killed.returncode == -signal.SIGKILL and lock_path(save).exists()
    leftovers = [tmp_path / ".run.pth.k3x9.tmp", tmp_path / ".run.log.json.a1b2.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"half a checkpoint")
    done = run_script("pretrain.py", *setup["args"], "--save", save)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(f"removed {p} (left by a run killed while saving)" in done.stdout for p in leftovers)
    assert temporaries(tmp_path) == [] and not lock_path(save).exists()  # released and removed at the end
    assert_same_as_reference(save, setup)


def test_resume_auto_continues_a_killed_run(tmp_path: Path, setup: dict, script_env, run_script) -> None:
    """--resume auto (what torchrun --max-restarts needs) resumes when there is a checkpoint (and starts when
    there is none: the first attempt of test_distributed.py's elastic restart)."""
    save = tmp_path / "run.pth"
    killed = interrupt(save, setup, script_env, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    done = run_script("pretrain.py", *setup["args"], "--save", save, "--resume", "auto")
    assert done.returncode == 0 and "resuming at epoch" in done.stdout, done.stderr[-3000:]
    assert_same_as_reference(save, setup)
