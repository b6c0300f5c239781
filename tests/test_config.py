"""Config loading and validation: bad files fail with one clear message."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.cli import REPO_ROOT, UserError
from common.config import ModelConfig, load_config

GOOD = {"n_layer": 2, "d_hidn": 32, "n_head": 4, "d_ff": 64, "n_seq": 16}


def write(tmp_path: Path, obj: object) -> Path:
    p = tmp_path / "config.json"
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return p


@pytest.mark.parametrize("path", sorted([*REPO_ROOT.glob("*/config*.json"), *REPO_ROOT.glob("*/experiment/config.json")]),
                         ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.d_hidn % cfg.n_head == 0
    # the papers' architectures by default; rotary attention only in the encoders' experiment config
    assert cfg.rotary == (path.parent.name == "experiment")


def test_good_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.d_head == 8 and cfg.dropout == 0.1 and cfg.with_vocab(100).n_vocab == 100 and not cfg.rotary
    assert load_config(write(tmp_path, {**GOOD, "rotary": True})).rotary


@pytest.mark.parametrize("change, message", [
    ({"d_hidn": 30}, "not divisible by n_head"),
    ({"n_layer": 0}, "n_layer must be positive"),
    ({"dropout": 1.5}, "dropout must be in"),
    ({"n_heads": 4}, "unknown key"),
    ({"d_ff": "big"}, "d_ff must be int"),
    ({"n_seq": None}, "n_seq must be int"),
    ({"rotary": 1}, "rotary must be bool"),
    ({"rotary": True, "d_hidn": 36, "n_head": 4}, "rotary needs an even head size"),
])
def test_bad_values_are_named(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_config(write(tmp_path, {**GOOD, **change}))


def test_missing_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing key.*d_ff"):
        load_config(write(tmp_path, {k: v for k, v in GOOD.items() if k != "d_ff"}))


def test_missing_file_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config not found"):
        load_config(tmp_path / "nope.json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_config(write(tmp_path, "{oops"))


def test_round_trip() -> None:
    cfg = ModelConfig(**GOOD, n_vocab=10)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
