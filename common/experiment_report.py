"""The experiment's README section and plots, rebuilt from its logs alone (results.csv, runs/, the
pretraining logs): the pretraining table, the label curve with seeds, the gains over scratch paired by
seed, and the tiny-budget recipe table."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from common.nsmc import NSMC_DEV_SIZE
from common.experiment_plan import (RECIPE, SCRATCH, TFIDF, Budget, Experiment, Paths, item_name, recipe_budget,
                                    recipe_checkpoint, size_label, store_path)
from common.io import atomic_path
from common.paths import rel
from common.plots import STEPS_SUFFIX, plot_pretraining, pyplot
from common.io import read_csv
from common.results import update_readme

BEGIN, END = "<!-- experiment:begin -->", "<!-- experiment:end -->"


def _stats(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation (0 for one value), count)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std, n


def _cell(values: list[float]) -> str:
    if not values:
        return "not run"
    mean, std, n = _stats(values)
    return f"{mean:.4f} ± {std:.4f} ({n})" if n > 1 else f"{mean:.4f}"


def columns(exp: Experiment) -> list[tuple[str, str, str]]:
    """(heading, arm, variant) of the curve's lines."""
    plain = next(iter(exp.variants))
    cols = [("scratch", SCRATCH, plain)] + [(a.name, a.name, plain) for a in exp.arms]
    cols += [(f"{exp.arms[0].name}, {v}", exp.arms[0].name, v) for v in exp.first_arm_only]
    return cols + [("TF-IDF", TFIDF, "")]


def accuracies(rows: list[dict[str, str]], arm: str, variant: str, size: int) -> dict[int, float]:
    """seed -> test accuracy of the runs of one cell."""
    prefix = item_name(arm, variant, size, None)
    return {int(r["item"][len(prefix):]): float(r["test_acc"]) for r in rows if r["item"].startswith(prefix)}


def gain(rows: list[dict[str, str]], arm: str, variant: str, size: int) -> tuple[float, float, int] | None:
    """Mean, std and count of the test-accuracy gains over scratch, paired by seed (the same labelled reviews)."""
    pre, scratch = accuracies(rows, arm, variant, size), accuracies(rows, SCRATCH, variant, size)
    paired = [pre[s] - scratch[s] for s in sorted(set(pre) & set(scratch))]
    return _stats(paired) if paired else None


def heldout_cells(exp: Experiment, last: dict) -> str:
    """The held-out loss and accuracy cells of a pretraining log's last row (see Experiment.heldout_columns)."""
    loss = last["heldout_loss"]
    cells = [f"{loss:.3f} ({math.exp(loss):.0f})" if exp.loss_is_lm else f"{loss:.3f}"]
    for _, head in exp.heldout_columns:
        key = f"heldout_{head}_" if head else "heldout_"
        acc, positives = last.get(f"{key}acc", math.nan), last.get(f"{key}next")
        guess = f" ({max(positives, 1 - positives):.3f})" if positives is not None and not math.isnan(positives) else ""
        cells.append("none" if math.isnan(acc) else f"{acc:.3f}{guess}")
    return " | ".join(cells)


def pretraining_table(exp: Experiment, paths: Paths, budget: Budget) -> str:
    headings = ["Held-out loss (ppl)" if exp.loss_is_lm else "Held-out loss", *(h for h, _ in exp.heldout_columns)]
    lines = ["| Pretraining | Store tokens | Steps x batch x n_seq | Tokens seen | " + " | ".join(headings)
             + " | Tokens/s | Minutes |", "|---" * (6 + len(headings)) + "|"]
    for arm in exp.arms:
        log = paths.log(arm)
        if not log.is_file():
            lines.append(f"| {arm.name} | not run |" + " |" * (4 + len(headings)))
            continue
        history = json.loads(log.read_text())
        last = history[-1]
        batch, n_seq = last.get("batch", budget.pretrain_batch), last.get("n_seq", budget.n_seq)
        meta = store_path(exp, paths, arm, n_seq) / "meta.json"  # (logs written before store_tokens was logged)
        tokens = last.get("store_tokens") or (json.loads(meta.read_text())["n_tokens"] if meta.is_file() else None)
        lines.append(f"| {arm.name} | {f'{tokens / 1e6:.1f}M' if tokens else '?'} | {last['step']} x {batch} x "
                     f"{n_seq} | {last['step'] * batch * n_seq / 1e6:.2f}M | {heldout_cells(exp, last)} | "
                     f"{last['tokens_per_s']:,.0f} | {sum(r['time_s'] for r in history) / 60:.1f} |")
    return "\n".join(lines)


def recipe_table(paths: Paths, budget: Budget) -> str:
    lines = ["| Pretraining change | Steps x batch x n_seq | Held-out loss (ppl) | Held-out next-token acc | "
             "Tokens/s | Minutes |", "|---|---|---|---|---|---|"]
    for name, changes in RECIPE:
        b = recipe_budget(budget, changes)
        log = recipe_checkpoint(paths, name).with_suffix(".log.json")
        if not log.is_file():
            lines.append(f"| {name} | {b.pretrain_steps} x {b.pretrain_batch} x {b.n_seq} | not run | | | |")
            continue
        history = json.loads(log.read_text())
        last = history[-1]
        lines.append(f"| {name} | {last['step']} x {b.pretrain_batch} x {b.n_seq} | {last['heldout_loss']:.3f} "
                     f"({math.exp(last['heldout_loss']):.0f}) | {last['heldout_acc']:.3f} | {last['tokens_per_s']:,.0f} | "
                     f"{sum(r['time_s'] for r in history) / 60:.1f} |")
    return "\n".join(lines)


def labelled_count(rows: list[dict[str, str]], size: int) -> int:
    """The labelled reviews the runs of a size trained on (size 0: the whole pool); 0 when none ran."""
    return next((int(r["train_reviews"]) for r in rows if f"-n{size_label(size)}-" in r["item"]), 0)


def curve_table(exp: Experiment, rows: list[dict[str, str]], sizes: list[int]) -> str:
    cols = columns(exp)
    lines = ["| Labelled reviews | " + " | ".join(h for h, _, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for size in sizes:
        n = labelled_count(rows, size) or size
        cells = [_cell(list(accuracies(rows, arm, variant, size).values())) for _, arm, variant in cols]
        lines.append(f"| {int(n):,} | " + " | ".join(cells) + " |" if n else "| all | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_points(rows: list[dict[str, str]], arm: str, variant: str, sizes: list[int]) -> list[tuple[int, float, float]]:
    """(labelled reviews, mean, std of test accuracy over seeds) of one line of the curve, at the sizes that ran.

    A size that other lines ran but this one did not is a NaN point between this line's first and last, so the
    line breaks there instead of drawing a straight segment across a count it has no run at.
    """
    points = []
    for size in sizes:
        accs = list(accuracies(rows, arm, variant, size).values())
        n = labelled_count(rows, size)
        if accs and n:
            mean, std, _ = _stats(accs)
            points.append((n, mean, std))
        elif n:
            points.append((n, math.nan, math.nan))
    while points and math.isnan(points[-1][1]):
        points.pop()
    while points and math.isnan(points[0][1]):
        points.pop(0)
    return points


def plot_curve(exp: Experiment, rows: list[dict[str, str]], sizes: list[int], target: Path) -> None:
    """img/label_curve.svg: test accuracy against labelled reviews (log x), one line per column, error bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (heading, arm, variant) in enumerate(columns(exp)):
        if points := curve_points(rows, arm, variant, sizes):
            x, y, err = zip(*points)
            style = dict(ls="--", color="0.4") if arm == TFIDF else dict(ls="-", color=f"C{i}")
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, label=heading, **style)
    plotted = list(rows)  # every row drawn, for the ticks
    for label, other in exp.beside:  # the other model's arms, dotted, in the colour of the same arm here
        other_rows = read_csv(other.default_out / "results.csv")
        plotted += other_rows
        other_plain = next(iter(other.variants))
        for i, (heading, arm, variant) in enumerate(columns(exp)):
            if arm in (SCRATCH, TFIDF) or variant != next(iter(exp.variants)):
                continue
            if points := curve_points(other_rows, arm, other_plain, sizes):
                x, y, err = zip(*points)
                ax.errorbar(x, y, yerr=err, marker="s", ms=3, capsize=2, ls=":", color=f"C{i}", alpha=0.8,
                            label=f"{label}: {heading}")
    ax.set_xscale("log")
    counts = sorted({int(r["train_reviews"]) for r in plotted if str(r.get("train_reviews", "")).isdigit()})
    ax.set_xticks(counts, [f"{n:,}" for n in counts])  # the label counts themselves, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("labelled train reviews (log scale)")
    ax.set_ylabel("test accuracy (best-dev epoch)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title("NSMC test accuracy by labelled reviews (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    target.parent.mkdir(exist_ok=True)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None})
    plt.close(fig)


def beside_tables(exp: Experiment, paths: Paths, sizes: list[int]) -> list[str]:
    """Each `exp.beside` model's curve table from its own logs (dotted in the plot), or a line saying it has none."""
    parts = []
    for label, other in exp.beside:
        log = other.default_out / "results.csv"
        where = Path(os.path.relpath(log, paths.readme.parent)).as_posix()  # as the README links it
        other_rows = read_csv(log)
        parts.append(f"{label} at the same budget, from its own logs (`{where}`; dotted in the plot):"
                     if other_rows else f"{label}: no run logged in `{where}` yet.")
        if other_rows:
            parts.append(curve_table(other, other_rows, sizes))
    return parts


def report(exp: Experiment, paths: Paths, budget: Budget) -> None:
    rows = read_csv(paths.out / "results.csv")
    sizes = sorted(budget.sizes, key=lambda s: s or 10**9)
    plain = next(iter(exp.variants))
    recipe = {name: log for name, _ in RECIPE if (log := curve_log(recipe_checkpoint(paths, name))) is not None}
    gains = []
    for arm in exp.arms:
        for size in sizes:
            g = gain(rows, arm.name, plain, size)
            if g:
                mean, std, n = g
                gains.append(f"| {arm.name} | {size_label(size)} | {mean * 100:+.2f} | "
                             f"{f'{std * 100:.2f}' if n > 1 else '- (one seed)'} | {n} |")
    minutes = sum(float(r["minutes"]) for r in rows if r.get("minutes") and not exp.taken_over(r))
    minutes += sum(sum(r["time_s"] for r in json.loads(paths.log(a).read_text())) / 60
                   for a in exp.arms if paths.log(a).is_file())
    taken = [r for r in rows if exp.taken_over(r)]
    taken_note = (f" The {len(taken)} scratch rows are the runs of `{exp.twin_out}`, "
                  f"the same model, taken over (not counted)." if taken else "")
    section = "\n\n".join([
        f"Budget: pretraining {budget.pretrain_steps} steps x {budget.pretrain_batch} x {budget.n_seq} tokens "
        f"({budget.pretrain_tokens / 1e6:.2f}M tokens per arm), dropout {budget.dropout:g}, peak lr "
        f"{budget.pretrain_lr:g}, beta2 {budget.beta2:g}; fine-tuning lr {budget.train_lr:g}, "
        + ", ".join(f"{size_label(s)}: {budget.epochs(s)} ep x batch {budget.batch(s)}" for s in sizes)
        + f"; the epoch picked on the fixed dev set of {NSMC_DEV_SIZE:,} reviews, test scored once. "
        f"Training time of the runs logged so far: {minutes:.0f} min.{taken_note}",
        pretraining_table(exp, paths, budget),
        "![pretraining curves](img/pretrain_arms.svg)",
        "Test accuracy (mean ± standard deviation over seeds, the count in brackets; "
        "the seed draws the labelled reviews and the initialization):",
        curve_table(exp, rows, sizes),
        "Gain over scratch in points, paired by seed (same labelled reviews):",
        "| Pretraining | Labelled | Gain (points) | Std of gain | Seeds |\n|---|---|---|---|---|\n" + "\n".join(gains)
        if gains else "No pair run yet.",
        "![label curve](img/label_curve.svg)",
        *beside_tables(exp, paths, sizes),
        *([f"What helps at a tiny budget: each row changes one setting of the pretraining above and runs for "
           f"{budget.recipe_tokens / 1e6:.2f}M tokens on the {exp.recipe_arm} store (held-out loss at another "
           f"n_seq is over windows of that length: more context per token):",
           recipe_table(paths, budget)] if exp.recipe_arm is not None else []),
        *(["![recipe curves](img/pretrain_recipe.svg)"] if recipe else []),
    ])
    readme = paths.readme
    update_readme(readme, section, BEGIN, END)
    img = readme.parent / "img"
    plot_curve(exp, rows, sizes, img / "label_curve.svg")
    arms = {arm.name: log for arm in exp.arms if (log := curve_log(paths.checkpoint(arm))) is not None}
    end_only = any(log.suffix == ".json" for log in arms.values())  # a run logged before the step log
    plot_pretraining(arms, img / "pretrain_arms.svg", "each arm on its own store's held-out tail"
                     + (" (a run logged before the step log: its end only)" if end_only else ""),
                     tokens_per_step=budget.pretrain_batch * budget.n_seq)
    if recipe:
        plot_pretraining(recipe, img / "pretrain_recipe.svg",
                         f"the tiny-budget recipe rows ({budget.recipe_tokens / 1e6:.2f}M tokens each)")
    print(f"updated {rel(readme)} and img/label_curve.svg, pretrain_arms.svg"
          f"{', pretrain_recipe.svg' if recipe else ''} ({len(rows)} runs)")


def curve_log(checkpoint: Path) -> Path | None:
    """A pretraining run's step log, else its per-epoch log (older runs), else None (not run yet)."""
    for log in (checkpoint.with_suffix(STEPS_SUFFIX), checkpoint.with_suffix(".log.json")):
        if log.is_file():
            return log
    return None
