"""Faults: a killed, stopped or damaged run, through the real gpt/pretrain.py on the sample corpus.

- SIGKILL mid-epoch after a checkpoint appears, then --resume: the final weights
  (and the logged metrics) are those of an uninterrupted run, with dropout on.
- SIGTERM / Ctrl-C: a checkpoint is saved, exit code 143 / 130, one "stopped:"
  line and no traceback; --resume then finishes exactly as well.
- A truncated newest checkpoint: --resume warns and continues from `.prev`
  (same final weights); without a `.prev` it is refused with exit code 2.
- Saves are atomic: a failed write leaves the old file, and the previous
  checkpoint exists at every instant.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.checkpoint import load_checkpoint, prev_path, save_checkpoint
from common.io import atomic_open
from common.paths import REPO_ROOT

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
