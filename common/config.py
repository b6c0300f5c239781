"""Model configuration: a dataclass loaded from `config_half.json` / `config.json`
and validated, so that a typo or an impossible shape fails at once with a
message naming the file and the key, not deep inside a matmul."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from common.cli import UserError


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Transformer trunk (names as in the classic repo and the papers).

    n_vocab is not part of the JSON files: it comes from the vocab the model is
    trained with (`with_vocab`), so one config serves the sample and the real vocab.
    """

    n_layer: int  # Transformer layers
    d_hidn: int  # hidden size
    n_head: int  # attention heads; d_hidn must be divisible by it
    d_ff: int  # feed-forward inner size
    n_seq: int  # maximum sequence length (learned position embeddings)
    n_segment: int = 0  # segment (token type) embeddings: 2 for BERT, 0 = none
    dropout: float = 0.1
    layer_norm_epsilon: float = 1e-12
    # Rotary position embedding in every attention layer (Su et al., 2021), on top of the learned absolute
    # positions: a deviation from the papers (off in config_half.json / config.json), the setting of the
    # encoders' experiment, where without it BERT's MLM does not leave the unigram plateau (bert/README.md)
    rotary: bool = False
    n_vocab: int = 0

    @property
    def d_head(self) -> int:
        return self.d_hidn // self.n_head

    def with_vocab(self, n_vocab: int) -> "ModelConfig":
        return dataclasses.replace(self, n_vocab=n_vocab)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "ModelConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise UserError(f"{source}: unknown key(s) {', '.join(unknown)} (valid keys: {', '.join(fields)})")
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in raw]
        if missing:
            raise UserError(f"{source}: missing key(s) {', '.join(missing)} (add them to the file)")
        for name, value in raw.items():
            want = {"float": float, "bool": bool}.get(fields[name].type, int)
            ok = isinstance(value, (int, float)) if want is float else isinstance(value, want)
            if not ok or (isinstance(value, bool) and want is not bool):
                raise UserError(f"{source}: {name} must be {want.__name__}, got {value!r}")
        cfg = cls(**raw)
        cfg.validate(source)
        return cfg

    def validate(self, source: str = "config") -> None:
        for name in ("n_layer", "d_hidn", "n_head", "d_ff", "n_seq"):
            if getattr(self, name) <= 0:
                raise UserError(f"{source}: {name} must be positive, got {getattr(self, name)}")
        if self.n_segment < 0 or self.n_vocab < 0:
            raise UserError(f"{source}: n_segment and n_vocab must be >= 0")
        if self.d_hidn % self.n_head:
            raise UserError(
                f"{source}: d_hidn={self.d_hidn} is not divisible by n_head={self.n_head} "
                f"(choose n_head among the divisors of d_hidn)"
            )
        if self.rotary and self.d_head % 2:
            raise UserError(f"{source}: rotary needs an even head size, got d_hidn / n_head = {self.d_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"{source}: dropout must be in [0, 1), got {self.dropout}")
        if not self.layer_norm_epsilon > 0:
            raise UserError(f"{source}: layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon}")


def load_config(path: str | os.PathLike) -> ModelConfig:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config not found: {p} (pass --config config_half.json or config.json)")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: not valid JSON ({e.msg} at line {e.lineno}); fix the file")
    if not isinstance(raw, dict):
        raise UserError(f"{p}: must hold a JSON object of config keys")
    return ModelConfig.from_dict(raw, source=str(p))
