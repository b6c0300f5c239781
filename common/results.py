"""Results of fine-tuning runs: a finished run's row and logs (train.py's report), the results table
in markdown, and a README section replaced between its marker lines (experiment.py's report).

Layout beside a results table (a model folder's own, or experiment/'s):
    runs/<ITEM>.csv   per-epoch log of one run (train and dev loss and accuracy, time, tokens/s)
    runs/<ITEM>.steps.csv  its step log (train loss every --log_every steps, dev every --eval_every)
    results.csv       one row per finished run
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from common.cli import UserError
from common.io import atomic_open, read_csv, write_csv

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
RESULT_COLUMNS = ["item", "pretrain", "variant", "epochs", "best_epoch", "train_reviews", "seed", "dev_acc",
                  "test_loss", "test_acc", "minutes", "device", "note"]


def append_result(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Add a run's row; a row with the same item replaces the older one (a rerun supersedes it)."""
    rows = [r for r in read_csv(path) if r["item"] != row["item"]]
    write_csv(path, rows + [row], RESULT_COLUMNS)


def result_row(item: str, pretrain: str, variant: str, history: list[dict[str, Any]], test: dict[str, float],
               train_reviews: int, seed: int, device: str, note: str) -> dict[str, Any]:
    """A fine-tuning run's row of the results table: the epoch dev picked, and test scored with it."""
    best = max(history, key=lambda r: r["dev_acc"])
    return {"item": item, "pretrain": pretrain, "variant": variant or "-", "epochs": len(history),
            "best_epoch": best["epoch"], "train_reviews": train_reviews, "seed": seed,
            "dev_acc": round(best["dev_acc"], 4), "test_loss": round(test["loss"], 4), "test_acc": round(test["acc"], 4),
            "minutes": round(sum(r["time_s"] for r in history) / 60, 1), "device": device, "note": note}


def record_run(results: str, row: dict[str, Any], history: list[dict[str, Any]], step_log: list[dict[str, Any]],
               save: Path) -> None:
    """Report a finished run: its logs in runs/ beside `results` and its row in `results` (the README tables are
    experiment.py's, drawn from its own logs)."""
    folder = Path(results).parent
    runs = folder / "runs"
    runs.mkdir(exist_ok=True)
    write_csv(runs / f"{row['item']}.csv", history)
    write_csv(runs / f"{row['item']}.steps.csv", step_log)
    append_result(results, row)
    print(f"best epoch {row['best_epoch']} (dev acc {row['dev_acc']:.4f}): test acc {row['test_acc']:.4f}; "
          f"model saved to {save}; results in {results}")
    print("command: " + " ".join(shlex.quote(a) for a in sys.argv))


def _fmt(value: str, digits: int = 4) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return value or ""


def results_table(rows: list[dict[str, str]]) -> str:
    """The markdown table for a README."""
    head = "| ITEM | Pretrain | Variant | Epochs (best) | Train reviews | Dev acc | Test loss | Test acc | Minutes | Device | Note |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['item']} | {r['pretrain']} | {r['variant']} | {r['epochs']} ({r['best_epoch']}) | {r['train_reviews']} | "
            f"{_fmt(r['dev_acc'])} | {_fmt(r['test_loss'])} | **{_fmt(r['test_acc'])}** | {_fmt(r['minutes'], 1)} | "
            f"{r['device']} | {r.get('note', '')} |"
        )
    return "\n".join(lines)


def update_readme(readme: Path, table: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace what stands between the `begin` and `end` marker lines of `readme` (atomically)."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else f"{begin}\n{end}\n"
    if begin not in text or end not in text:
        raise UserError(f"{readme} has no {begin} ... {end} section (add the two marker lines where it goes)")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with atomic_open(readme) as f:
        f.write(f"{head}{begin}\n{table}\n{end}{tail}")
