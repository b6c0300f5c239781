"""The training loop: exact resume, schedule, checkpoint safety, token stores."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from common.checkpoint import load_checkpoint, prev_path, save_checkpoint
from common.cli import UserError
from common.config import ModelConfig
from common.device import Runtime, rank_seed, restore_rank_state, rng_state, seed_everything, select_device
from common.token_store import StoreWriter, TokenStore
from common.trainer import Trainer, TrainSettings, lr_factor, random_batches
from gpt.model import GPTLMHeadModel
from gpt.pretrain import WindowDataset

CFG = ModelConfig(n_layer=2, d_hidn=32, n_head=4, d_ff=64, n_seq=16, dropout=0.1, n_vocab=40)


@pytest.fixture()
def store(tmp_path: Path) -> TokenStore:
    tokens = np.random.default_rng(0).integers(7, 40, size=16 * 40 + 1).astype(np.uint16)
    with StoreWriter(tmp_path / "store", {"n_seq": 16, "vocab_fingerprint": "x"}) as w:
        w.append("tokens", tokens[:300])
        w.append("tokens", tokens[300:])
    return TokenStore(tmp_path / "store")


def make_trainer(store: TokenStore, ckpt: Path) -> Trainer:
    seed_everything(123)
    settings = TrainSettings(epochs=2, batch_size=8, lr=1e-3, warmup=2, seed=5, save_every=3)
    trainer = Trainer(GPTLMHeadModel(CFG), settings, Runtime(torch.device("cpu")), len(plan(store, 0)), ckpt)
    trainer.data = WindowDataset(store, CFG)  # (for `fit` below)
    return trainer


def plan(store: TokenStore, epoch: int) -> list[np.ndarray]:
    return random_batches(len(WindowDataset(store, CFG)), 8, 5, epoch)


def fit(trainer: Trainer, store: TokenStore) -> None:
    """The loop of every pretrain.py, its evaluation left out."""
    for epoch in trainer.epochs():
        for batch in trainer.batches(trainer.data, plan(store, epoch)):
            trainer.step(batch)
            trainer.log_step(10)
            if trainer.due(trainer.settings.save_every) and not trainer.epoch_finished:
                trainer.save()
        trainer.end_epoch(trainer.epoch_metrics(), {})


def test_store_round_trip(store: TokenStore, tmp_path: Path) -> None:
    assert store["tokens"].shape == (16 * 40 + 1,) and store.meta["n_seq"] == 16
    assert not list(tmp_path.glob(".*tmp"))  # no temporary folder left behind
    windows = WindowDataset(store, CFG).collate(np.array([0, 2]))
    flat = np.asarray(store["tokens"], dtype=np.int64)
    assert windows["input_ids"][1].tolist() == flat[32:48].tolist()
    assert windows["labels"][1].tolist() == flat[33:49].tolist()  # targets = inputs shifted by one


def test_truncated_store_is_refused(store: TokenStore) -> None:
    with open(store.path / "tokens.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(UserError, match="truncated"):
        TokenStore(store.path)


def test_resume_after_interruption_gives_identical_weights(store: TokenStore, tmp_path: Path) -> None:
    reference = make_trainer(store, tmp_path / "ref.pth")
    fit(reference, store)
    expected = reference.model.state_dict()

    calls = {"n": 0}

    def interrupting_step(model, inputs):  # a forward pre-hook: one call per training step here
        calls["n"] += 1
        if calls["n"] == 7:  # mid-epoch 1 (5 steps per epoch): as if the user pressed Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)

    first = make_trainer(store, tmp_path / "run.pth")
    first.model.register_forward_pre_hook(interrupting_step)
    with pytest.raises(UserError, match="resume"):
        fit(first, store)
    interrupted = load_checkpoint(tmp_path / "run.pth")
    assert interrupted["progress"]["global_step"] == 7
    # epoch 2's steps 6 and 7 so far (8 windows of 16 real tokens each): a resumed epoch reports its whole time
    assert interrupted["epoch_clock"]["tokens"] == 2 * 8 * 16 and interrupted["epoch_clock"]["time_s"] > 0

    torch.manual_seed(999)  # a fresh process: different RNG, different init; resume must restore both
    second = make_trainer(store, tmp_path / "run.pth")
    assert second.resume()
    fit(second, store)
    assert second.epoch_clock == {"time_s": 0.0, "tokens": 0}  # reset at each epoch's end
    for name, value in expected.items():
        torch.testing.assert_close(second.model.state_dict()[name], value, atol=0, rtol=0, msg=name)


def test_lr_schedule() -> None:
    assert [round(lr_factor(s, 10, 2), 3) for s in range(10)] == [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]


def test_random_batches_deterministic_and_complete() -> None:
    a, b = random_batches(20, 6, 1, 0), random_batches(20, 6, 1, 0)
    assert all((x == y).all() for x, y in zip(a, b)) and len(a) == 3
    assert not (np.concatenate(a) == np.concatenate(random_batches(20, 6, 1, 1))).all()
    assert sorted(np.concatenate(random_batches(20, 6, 1, 0, drop_last=False))) == list(range(20))


def test_damaged_checkpoint_falls_back_to_previous(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})
    save_checkpoint(path, {"model": {"w": torch.zeros(2)}})
    assert prev_path(path).is_file()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as by a crash mid-copy
    state = load_checkpoint(path)
    assert state["model"]["w"].tolist() == [1.0, 1.0]
    assert "damaged" in capsys.readouterr().err
    prev_path(path).unlink()
    with pytest.raises(UserError, match="damaged"):
        load_checkpoint(path)


def test_checkpoint_load_never_executes_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "x": Evil()}, path)
    with pytest.raises(UserError):
        load_checkpoint(path, fallback=False)
    assert not (tmp_path / "pwned").exists()


def test_gpu_selection_errors() -> None:
    assert select_device(None).type in ("cpu", "cuda")
    with pytest.raises(UserError, match="--gpu 7 does not exist"):
        select_device(7)


def test_rank_state_of_a_checkpoint_written_by_another_number_of_ranks(capsys) -> None:
    cpu = torch.device("cpu")
    saved = [{"rng": rng_state(cpu), "totals": {"loss": [1.0, 2.0]}, "window": [0.5, 1, 10]},
             {"rng": rng_state(cpu), "totals": {"loss": [3.0, 4.0], "acc": [1.0, 4.0]}, "window": [0.7, 1, 12]}]
    state = {"ranks": saved}
    # the same number of ranks: each takes its own sums and window
    totals, window = restore_rank_state(state, Path("x.pth"), Runtime(cpu, rank=1, world_size=2), seed=3)
    assert totals == {"loss": [3.0, 4.0], "acc": [1.0, 4.0]} and window == [0.7, 1, 12]
    # one rank now: it takes every saved sum (their total is what the epoch's averages need)
    totals, window = restore_rank_state(state, Path("x.pth"), Runtime(cpu), seed=3)
    assert totals == {"loss": [4.0, 6.0], "acc": [1.0, 4.0]} and window == [0.0, 0, 0]
    assert "written by 2 rank(s), this run has 1" in capsys.readouterr().err
    # three ranks now: rank 2 has no saved state; it starts from zero and reseeds from (seed, rank)
    totals, window = restore_rank_state(state, Path("x.pth"), Runtime(cpu, rank=2, world_size=3), seed=3)
    assert totals == {} and window == [0.0, 0, 0]
    expected = torch.Generator().manual_seed(rank_seed(3, 2)).get_state()
    assert torch.equal(torch.get_rng_state(), expected)


def test_a_config_key_newer_than_the_checkpoint_takes_its_default(tmp_path: Path) -> None:
    """A checkpoint saved before ModelConfig.rotary existed fits a config with rotary false (the default)
    and is refused, naming the key, by one with rotary true."""
    from common.checkpoint import load_compatible

    cfg = ModelConfig(n_layer=1, d_hidn=8, n_head=2, d_ff=16, n_seq=8, n_vocab=20)
    old = {k: v for k, v in cfg.to_dict().items() if k != "rotary"}
    save_checkpoint(tmp_path / "old.pth", {"config": old, "vocab": {"fingerprint": "f", "size": 20}, "model": {}})
    assert load_compatible(tmp_path / "old.pth", cfg.to_dict(), "f", "v.model")["config"] == old
    with pytest.raises(UserError, match="rotary: checkpoint False vs config True"):
        load_compatible(tmp_path / "old.pth", {**cfg.to_dict(), "rotary": True}, "f", "v.model")


def test_a_training_step_reads_nothing_back_to_the_host(store: TokenStore, tmp_path: Path) -> None:
    """No .item() / float() / int() / bool() / .tolist() of a tensor inside a step: on a GPU each would wait
    for the device. The metrics and the loss stay tensors until a step-log point or the epoch's end reads
    them once. Not counted: collate (it builds the batch on the host) and AdamW's CPU code path, which reads
    its step counter (the fused AdamW the trainer takes on CUDA keeps it on the device)."""
    trainer = make_trainer(store, tmp_path / "run.pth")
    batches = plan(store, 0)
    reads: list[str] = []
    counting = [False]
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "__float__", "__int__", "__bool__", "tolist")}

    def counted(name):
        def read(self, *args, **kwargs):
            if counting[0]:
                reads.append(name)
            return originals[name](self, *args, **kwargs)
        return read

    def uncounted(function):
        def call(*args, **kwargs):
            counting[0] = False
            try:
                return function(*args, **kwargs)
            finally:
                counting[0] = True
        return call

    trainer.data.collate = uncounted(trainer.data.collate)
    trainer.optimizer.step = uncounted(trainer.optimizer.step)
    trainer.step(trainer.make_batch(trainer.data, batches[0], 0))  # the first step also checks that every parameter got a gradient
    try:
        for name in originals:
            setattr(torch.Tensor, name, counted(name))
        counting[0] = True
        for step, indices in enumerate(batches[1:4], start=1):
            trainer.step(trainer.make_batch(trainer.data, indices, step))
            trainer.log_step(10)  # not a log point: reads nothing
        counting[0] = False
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    assert reads == []
    trainer.log_step(1)  # a log point reads the window's sums back, once
    assert trainer.step_log[-1]["step"] == 4 and np.isfinite(trainer.step_log[-1]["train_loss"])


def test_collating_ahead_in_a_thread_changes_no_number(store: TokenStore, tmp_path: Path) -> None:
    """The background thread (--prefetch 2, the default) makes the same batches as collating in the step
    (--prefetch 0): every batch's randomness comes from (seed, step, instances), not from when it is made."""
    weights = []
    for prefetch in (0, 2):
        trainer = make_trainer(store, tmp_path / f"p{prefetch}.pth")
        trainer.settings.prefetch = prefetch
        fit(trainer, store)
        weights.append(trainer.model.state_dict())
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, atol=0, rtol=0, msg=name)
