"""The pretraining loader alone, in a process of its own, for its memory (benchmark case 3).

Opens a token store with common.token_store.TokenStore, wraps it in the model's
pretraining dataset (its pretrain.py's), collates random batches as the
trainer does, and prints one JSON line: the peak RSS (VmHWM) and the peak
anonymous RSS (RssAnon, sampled after every batch).

The two differ on purpose: the store is np.memmap'ed, so the pages read from it
count in RSS as file-backed page cache (shared, dropped by the kernel under
pressure), while anonymous memory is what the process itself allocated. A
loader that read the store into memory would grow the anonymous part with the
corpus; a memmap loader keeps it flat.

    python -m bench.loader_probe --model bert --store STORE --config bert/config_half.json
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.cli import make_parser, positive_int, run_main
from common.config import load_config
from common.token_store import TokenStore


def status_kb(field: str) -> int:
    """A memory line of /proc/self/status, in kB (0 where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def probe(model: str, store_path: str, config: str, batch: int, batches: int, seed: int) -> dict[str, int]:
    from bench.pretrain import pretraining

    store = TokenStore(store_path)
    cfg = load_config(config).with_vocab(int(store.meta["vocab_size"]))
    dataset = pretraining(model)[1](store, cfg)
    rng = np.random.default_rng(seed)
    peak_anon = status_kb("RssAnon")
    tokens = 0
    for _ in range(batches):
        out = dataset.collate(rng.choice(len(dataset), size=batch, replace=len(dataset) < batch))
        tokens += int(out["input_ids"].numel())
        peak_anon = max(peak_anon, status_kb("RssAnon"))
    return {"instances": len(dataset), "tokens": tokens, "peak_rss": status_kb("VmHWM") * 1024,
            "peak_anon_rss": peak_anon * 1024}


def main() -> None:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("gpt", "bert", "spanbert"), required=True, help="model folder")
    parser.add_argument("--store", required=True, help="token store from the model's data.py")
    parser.add_argument("--config", required=True, help="model config (for n_seq)")
    parser.add_argument("--batch", type=positive_int, default=32, help="instances per batch")
    parser.add_argument("--batches", type=positive_int, default=50, help="batches to collate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch draws")
    args = parser.parse_args()
    run_main(lambda: print(json.dumps(probe(args.model, args.store, args.config, args.batch, args.batches, args.seed))))


if __name__ == "__main__":
    main()
