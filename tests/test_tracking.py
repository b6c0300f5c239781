"""--log tensorboard / wandb: the numbers of the step log and the epoch rows reach the tracker.

Each backend is read back with its own package (TensorBoard's event reader; W&B's
protobuf records of an offline run) and compared with the CSV / JSON logs
that stay the source of the README. Without the package: one line, exit code 2.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from common.cli import REPO_ROOT
from common.io import read_csv


@pytest.fixture(scope="module")
def pretrain_args(tmp_path_factory, gpt_store: Path, sample_vocab: Path, write_config) -> list[str]:
    folder = tmp_path_factory.mktemp("tracking")
    config = write_config(folder / "tiny.json", dropout=0.0)
    return [str(a) for a in ("--input", gpt_store, "--vocab", sample_vocab, "--config", config, "--batch", "8",
                             "--epoch", "1", "--max_steps", "12", "--heldout", "0.45", "--log_every", "2",
                             "--eval_every", "4")]


def test_tensorboard_holds_the_logged_scalars(tmp_path: Path, pretrain_args: list[str], run_script) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    save = tmp_path / "pre.pth"
    done = run_script("pretrain.py", *pretrain_args, "--save", save, "--log", "tensorboard")
    assert done.returncode == 0, done.stderr[-3000:]
    events = EventAccumulator(str(tmp_path / "logs" / "pre")).Reload()  # the default --log_dir
    steps = read_csv(save.with_suffix(".steps.csv"))
    assert [int(r["step"]) for r in steps] == [2, 4, 6, 8, 10, 12]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [2, 4, 6, 8, 10, 12]
    assert [e.value for e in loss] == pytest.approx([float(r["train_loss"]) for r in steps], rel=1e-6)
    assert [e.step for e in events.Scalars("eval/heldout_loss")] == [4, 8, 12]
    assert {"train/lr", "train/tokens_per_s", "epoch/train_loss", "epoch/heldout_loss"} <= set(events.Tags()["scalars"])
    final = json.loads(save.with_suffix(".log.json").read_text())[-1]
    assert events.Scalars("epoch/heldout_loss")[-1].value == pytest.approx(final["heldout_loss"], rel=1e-6)
    assert events.Scalars("epoch/heldout_loss")[-1].step == 12


def wandb_history(run_file: Path) -> dict[int, dict[str, float]]:
    """The history rows (step -> {name: value}) of an offline W&B run file, parsed with wandb's own protobuf
    Record. The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of chunks, each with a
    7-byte header (crc32, length, type: 1 whole, 2 first, 3 middle, 4 last piece of a record)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos = run_file.read_bytes(), 32768, 7
    records, pieces = [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pieces = chunk if kind in (1, 2) else pieces + chunk
        if kind in (1, 4):
            records.append(pieces)
    history = {}
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.setdefault(int(row.get("_step", record.history.step.num)), {}).update(row)
    return history


def test_wandb_offline_run_holds_the_logged_scalars(tmp_path: Path, pretrain_args: list[str], script_env) -> None:
    pytest.importorskip("wandb")
    save = tmp_path / "pre.pth"
    env = {**script_env, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, "pretrain.py", *pretrain_args, "--save", str(save), "--log", "wandb",
                           "--log_dir", str(tmp_path / "wb")], cwd=REPO_ROOT / "gpt", env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_files = list((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1, list((tmp_path / "wb").rglob("*"))
    history = wandb_history(run_files[0])
    steps = read_csv(save.with_suffix(".steps.csv"))
    assert sorted(history) == [int(r["step"]) for r in steps] == [2, 4, 6, 8, 10, 12]
    assert [history[int(r["step"])]["train/loss"] for r in steps] == pytest.approx([float(r["train_loss"]) for r in steps])
    assert [s for s in history if "eval/heldout_loss" in history[s]] == [4, 8, 12]
    final = json.loads(save.with_suffix(".log.json").read_text())[-1]
    assert history[12]["epoch/heldout_loss"] == pytest.approx(final["heldout_loss"])


def test_a_missing_tracker_package_is_one_line(tmp_path: Path, pretrain_args: list[str], script_env) -> None:
    """Run with a path where `tensorboard` cannot be imported (a shadowing module that raises ImportError)."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "tensorboard.py").write_text("raise ImportError('not installed')\n")
    env = {**script_env, "PYTHONPATH": f"{shadow}:{script_env['PYTHONPATH']}"}
    done = subprocess.run([sys.executable, "pretrain.py", *pretrain_args, "--save", str(tmp_path / "pre.pth"),
                           "--log", "tensorboard"], cwd=REPO_ROOT / "gpt", env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --log tensorboard needs the tensorboard package: pip install tensorboard (or drop --log)"]
    assert not (tmp_path / "pre.pth").exists()
