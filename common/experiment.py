"""The experiment behind every model's results: what pretraining buys, measured.

A model folder's experiment.py declares its pretraining arms (which text goes
into the store) and its fine-tuning variants; this module runs the whole plan
with one budget for every arm, and rebuilds the README's results section and
`img/label_curve.svg` from the logs:

1. pretraining: each arm's token store (its data.py), then the same number of
   steps x batch x n_seq tokens for every arm (its pretrain.py);
2. the label curve: train.py from scratch and from each pretraining at
   --sizes labelled reviews (seeds where the set is small), the epoch picked on
   the one fixed dev set (`common.corpus.nsmc_split`), test scored once;
3. the TF-IDF baseline on the same labelled reviews.

Every run is a command printed before it runs, and logs a row in
`experiment/results.csv` (per-epoch logs in `experiment/runs/`). The plan is
resumable: a run whose row (or pretraining log) exists is skipped, so an
interrupted experiment goes on where it stopped, and `--only report` redraws
the section from the logs alone. Runs are ordered so that a partial experiment
answers the main question first (the first arm against scratch at few labels).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.cli import UserError, make_parser, non_negative_int, positive_int, run_main
from common.io import atomic_path
from common.corpus import NSMC_DEV_SIZE
from common.paths import DATA_DIR, DEFAULT_VOCAB, KOWIKI_JSON, NSMC_TEST_JSON, NSMC_TRAIN_JSON, rel
from common.plots import STEPS_SUFFIX, plot_pretraining
from common.results import append_result, read_csv, update_readme

BEGIN, END = "<!-- experiment:begin -->", "<!-- experiment:end -->"
SCRATCH = "scratch"
TFIDF = "tfidf"


@dataclass
class Arm:
    """One pretraining: a name for the tables and the text its store holds."""
    name: str  # e.g. "kowiki+reviews"
    kowiki: bool  # the Wikipedia articles (kowiki.json)
    reviews: bool  # the NSMC train split's review text (data.py --extra; dev left out)

    @property
    def slug(self) -> str:
        return self.name.replace("+", "_")


@dataclass
class Experiment:
    folder: Path  # the model folder (data.py, pretrain.py, train.py live there)
    arms: list[Arm]  # in priority order: the first is run against scratch first
    variants: dict[str, list[str]]  # fine-tuning variant -> train.py options; the first is the plain one
    # variants run only with the first arm (e.g. GPT's auxiliary LM loss), besides the plain one
    first_arm_only: list[str] = field(default_factory=list)
    recipe_arm: str = "kowiki"  # the arm whose store the tiny-budget recipe table pretrains on

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)


@dataclass
class Paths:
    """Where the experiment reads and writes (the options of experiment.py; tests point them at the sample)."""
    out: Path  # results.csv, runs/, the pretraining checkpoints and logs
    stores: Path  # the token stores data.py writes
    kowiki: Path
    train: Path
    test: Path
    vocab: Path
    config: Path
    readme: Path  # the README whose experiment section is redrawn (img/label_curve.svg beside it)

    def checkpoint(self, arm: Arm) -> Path:
        return self.out / f"save_pretrain_{arm.slug}.pth"

    def log(self, arm: Arm) -> Path:
        return self.checkpoint(arm).with_suffix(".log.json")


@dataclass
class Budget:
    """The one budget every arm gets (the options of experiment.py)."""
    pretrain_steps: int
    pretrain_batch: int
    n_seq: int
    pretrain_lr: float
    pretrain_warmup: int
    dropout: float
    beta2: float
    sizes: list[int]  # labelled reviews along the curve (0: all)
    seeds: int  # seeds at sizes <= seeded_up_to
    seeded_up_to: int
    train_lr: float
    train_batch: int
    compile: bool
    gpu: int | None
    recipe_tokens: int = 1_638_400  # tokens of each row of the tiny-budget recipe table (400 x 32 x 128)

    @property
    def pretrain_tokens(self) -> int:
        return self.pretrain_steps * self.pretrain_batch * self.n_seq

    def epochs(self, size: int) -> int:
        """Small label sets need many epochs, the full set one (the best is picked on dev)."""
        if size == 0 or size > 50_000:
            return 1
        return 3 if size > 10_000 else 6 if size > 2_000 else 12

    def batch(self, size: int) -> int:
        return 32 if 0 < size <= 2_000 else self.train_batch

    def seeds_at(self, size: int) -> list[int]:
        return list(range(1, self.seeds + 1)) if 0 < size <= self.seeded_up_to else [1]


@dataclass
class Run:
    item: str  # its row's name in results.csv
    arm: str  # SCRATCH, TFIDF or an Arm's name
    variant: str
    size: int
    seed: int


def size_label(size: int) -> str:
    return "all" if size == 0 else f"{size // 1000}k" if size % 1000 == 0 else str(size)


def item_name(arm: str, variant: str, size: int, seed: int | None) -> str:
    """`scratch-lm0-n1k-s2`; without a seed, the prefix every seed of that cell shares."""
    return "-".join(p for p in (arm, variant, f"n{size_label(size)}") if p) + (f"-s{seed}" if seed is not None else "-s")


def plan(exp: Experiment, budget: Budget) -> list[tuple[str, object]]:
    """The ordered steps: ("pretrain", Arm) and ("finetune", Run) / ("tfidf", Run)."""
    plain = next(iter(exp.variants))
    small = [s for s in budget.sizes if 0 < s <= budget.seeded_up_to]
    rest = [s for s in budget.sizes if s not in small]

    def runs(arm: str, variant: str, sizes: list[int]) -> list[tuple[str, object]]:
        kind = "tfidf" if arm == TFIDF else "finetune"
        return [(kind, Run(item_name(arm, variant, n, seed), arm, variant, n, seed))
                for n in sizes for seed in budget.seeds_at(n)]

    first = exp.arms[0].name
    steps: list[tuple[str, object]] = [("pretrain", exp.arms[0])]
    steps += runs(TFIDF, "", budget.sizes)
    steps += runs(SCRATCH, plain, small) + runs(first, plain, small)
    for n in rest:  # in pairs: a partial experiment never holds a scratch row without its pretrained twin
        steps += runs(SCRATCH, plain, [n]) + runs(first, plain, [n])
    for arm in exp.arms[1:]:  # arm by arm: a checkout without the weights pretrains each arm at most once again
        steps += [("pretrain", arm)] + runs(arm.name, plain, small) + runs(arm.name, plain, rest)
    for variant in exp.first_arm_only:
        steps += runs(first, variant, budget.sizes)
    steps += [("recipe", r) for r in RECIPE]
    return steps


# The tiny-budget recipe: each row changes one setting of the experiment's pretraining budget and
# runs for the same number of tokens (--recipe_tokens) on the store of the experiment's recipe_arm.
RECIPE: list[tuple[str, dict]] = [
    ("as the experiment", {}),
    ("dropout 0.1", {"dropout": 0.1}),
    ("n_seq x2, batch / 2", {"n_seq": 2, "pretrain_batch": 0.5}),  # factors of the budget's values
    ("beta2 0.99", {"beta2": 0.99}),
    ("peak lr x2", {"pretrain_lr": 2}),
    ("peak lr / 2", {"pretrain_lr": 0.5}),
    ("no torch.compile", {"compile": False}),
]
_FACTORS = ("n_seq", "pretrain_batch", "pretrain_lr")  # RECIPE values that multiply the budget's


def recipe_budget(budget: Budget, changes: dict) -> Budget:
    """The budget of one recipe row: the changes applied, steps set for --recipe_tokens tokens."""
    values = {k: (type(getattr(budget, k))(getattr(budget, k) * v) if k in _FACTORS else v) for k, v in changes.items()}
    b = dataclasses.replace(budget, **values)
    return dataclasses.replace(b, pretrain_steps=max(1, budget.recipe_tokens // (b.pretrain_batch * b.n_seq)),
                               pretrain_warmup=max(1, budget.pretrain_warmup * budget.recipe_tokens // budget.pretrain_tokens))


def recipe_checkpoint(paths: Paths, name: str) -> Path:
    return paths.out / "recipe" / f"{''.join(c if c.isalnum() else '_' for c in name)}.pth"


# --- running -------------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path) -> None:
    shown = ["python" if c == sys.executable else _short(c) for c in cmd]
    print(f"\n$ (cd {cwd.name} && {' '.join(shlex.quote(c) for c in shown)})", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd)
    if done.returncode:
        raise UserError(f"{cmd[1]} exited with {done.returncode} (its message is above); fix it and run "
                        f"experiment.py again: finished runs are kept and skipped")
    print(f"({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)


def _short(arg: str) -> str:
    """A path argument relative to the working directory, where that is shorter (for the printed commands)."""
    return os.path.relpath(arg) if os.path.isabs(arg) and len(os.path.relpath(arg)) < len(arg) else arg


def _gpu_args(budget: Budget) -> list[str]:
    return ["--gpu", str(budget.gpu)] if budget.gpu is not None else []


def store_path(exp: Experiment, paths: Paths, arm: Arm, n_seq: int) -> Path:
    return paths.stores / f"{arm.slug}_{exp.folder.name}{n_seq}"


def pretrain_arm(exp: Experiment, paths: Paths, arm: Arm, budget: Budget, checkpoint: Path | None = None,
                 need_weights: bool = False) -> None:
    """data.py for the arm's store (kept if built), then pretrain.py at `budget` (resumed if interrupted).

    A finished run is skipped: its log is all the report needs. A fine-tuning run needs the weights too
    (`need_weights`); they are not in git, so in a fresh checkout the same pretraining runs again."""
    checkpoint = checkpoint or paths.checkpoint(arm)
    log = checkpoint.with_suffix(".log.json")
    finished = log.is_file() and json.loads(log.read_text())[-1]["step"] >= budget.pretrain_steps
    if finished and (checkpoint.exists() or not need_weights):
        print(f"pretraining {_short(str(checkpoint))}: done")
        return
    if finished:
        print(f"pretraining {_short(str(checkpoint))}: logged, but its weights are not on disk (a fresh checkout): "
              f"pretraining it again with the same budget", flush=True)
        for stale in (log, checkpoint.with_suffix(STEPS_SUFFIX)):  # the run writes its own; stopped midway, it resumes
            stale.unlink()
    store = str(store_path(exp, paths, arm, budget.n_seq))
    text = ["--input", str(paths.kowiki) if arm.kowiki else "none"]
    text += ["--extra", str(paths.train), "--test", str(paths.test)] if arm.reviews else []
    _run([sys.executable, "data.py", "--n_seq", str(budget.n_seq), "--output", store, *text, "--vocab", str(paths.vocab)],
         exp.folder)
    checkpoint.parent.mkdir(exist_ok=True)
    resume = ["--resume"] if checkpoint.exists() else []
    _run([sys.executable, "pretrain.py", "--input", store, "--save", str(checkpoint), "--vocab", str(paths.vocab),
          "--config", str(paths.config), "--dropout", f"{budget.dropout:g}", "--batch", str(budget.pretrain_batch),
          "--max_steps", str(budget.pretrain_steps), "--epoch", "1", "--lr", f"{budget.pretrain_lr:g}",
          "--warmup", str(budget.pretrain_warmup), "--beta2", f"{budget.beta2:g}", "--save_every", "50",
          *(["--compile"] if budget.compile else []), *resume, *_gpu_args(budget)], exp.folder)


def note(budget: Budget, run: Run) -> str:
    return (f"{budget.epochs(run.size)} ep, batch {budget.batch(run.size)}, lr {budget.train_lr:g}; "
            f"pretrain {budget.pretrain_steps} x {budget.pretrain_batch}x{budget.n_seq} tok")


def finetune_run(exp: Experiment, paths: Paths, run: Run, budget: Budget) -> None:
    out = paths.out
    save = out / "save_best.pth"
    for stale in (save.with_suffix(".state.pth"), save):  # each run starts fresh, not as a resume of the last
        stale.unlink(missing_ok=True)
    pretrain = "none"
    if run.arm != SCRATCH:
        arm = exp.arm(run.arm)
        pretrain_arm(exp, paths, arm, budget, need_weights=True)
        pretrain = str(paths.checkpoint(arm))
    _run([sys.executable, "train.py", "--pretrain", pretrain, *exp.variants[run.variant], "--vocab", str(paths.vocab),
          "--train", str(paths.train), "--test", str(paths.test), "--config", str(paths.config), "--epoch", str(budget.epochs(run.size)), "--batch", str(budget.batch(run.size)),
          "--lr", f"{budget.train_lr:g}", "--warmup", "0.1", "--train_limit", str(run.size), "--seed", str(run.seed),
          "--item", run.item, "--results", str(out / "results.csv"), "--save", str(save), "--note", note(budget, run),
          *_gpu_args(budget)], exp.folder)


def tfidf_run(paths: Paths, run: Run) -> None:
    from common.baseline import run_baseline

    print(f"\n$ python -m common.baseline --train_limit {run.size} --seed {run.seed} --models  (row {run.item})", flush=True)
    row = run_baseline(str(paths.train), str(paths.test), train_limit=run.size, seed=run.seed)
    append_result(paths.out / "results.csv", {**row, "item": run.item, "seed": run.seed})
    print(f"TF-IDF at {row['train_reviews']:,} reviews: test acc {row['test_acc']:.4f}")


def run_experiment(exp: Experiment, paths: Paths, budget: Budget, only: str) -> None:
    paths.out.mkdir(exist_ok=True)
    done = {r["item"] for r in read_csv(paths.out / "results.csv")}
    if only != "report":
        for kind, step in plan(exp, budget):
            if kind == "pretrain":
                pretrain_arm(exp, paths, step, budget)
            elif kind == "recipe":
                name, changes = step
                pretrain_arm(exp, paths, exp.arm(exp.recipe_arm), recipe_budget(budget, changes), recipe_checkpoint(paths, name))
            elif step.item in done:
                continue
            elif kind == "tfidf":
                tfidf_run(paths, step)
            else:
                finetune_run(exp, paths, step, budget)
            report(exp, paths, budget)  # after every run: the README shows what has been measured so far
    report(exp, paths, budget)


# --- the report ----------------------------------------------------------------------

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


def pretraining_table(exp: Experiment, paths: Paths, budget: Budget) -> str:
    lines = ["| Pretraining | Store tokens | Steps x batch x n_seq | Tokens seen | Held-out loss (ppl) | "
             "Held-out next-token acc | Tokens/s | Minutes |", "|---|---|---|---|---|---|---|---|"]
    for arm in exp.arms:
        log = paths.log(arm)
        if not log.is_file():
            lines.append(f"| {arm.name} | not run | | | | | | |")
            continue
        history = json.loads(log.read_text())
        last = history[-1]
        batch, n_seq = last.get("batch", budget.pretrain_batch), last.get("n_seq", budget.n_seq)
        meta = store_path(exp, paths, arm, n_seq) / "meta.json"  # (logs written before store_tokens was logged)
        tokens = last.get("store_tokens") or (json.loads(meta.read_text())["n_tokens"] if meta.is_file() else None)
        lines.append(f"| {arm.name} | {f'{tokens / 1e6:.1f}M' if tokens else '?'} | {last['step']} x {batch} x "
                     f"{n_seq} | {last['step'] * batch * n_seq / 1e6:.2f}M | "
                     f"{last['heldout_loss']:.3f} ({math.exp(last['heldout_loss']):.0f}) | {last['heldout_acc']:.3f} | "
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


def plot_curve(exp: Experiment, rows: list[dict[str, str]], sizes: list[int], target: Path) -> None:
    """img/label_curve.svg: test accuracy against labelled reviews (log x), one line per column, error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (heading, arm, variant) in enumerate(columns(exp)):
        points = []
        for size in sizes:
            accs = list(accuracies(rows, arm, variant, size).values())
            n = labelled_count(rows, size)
            if accs and n:
                mean, std, _ = _stats(accs)
                points.append((n, mean, std))
        if points:
            x, y, err = zip(*points)
            style = dict(ls="--", color="0.4") if arm == TFIDF else dict(ls="-", color=f"C{i}")
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, label=heading, **style)
    ax.set_xscale("log")
    counts = sorted({int(r["train_reviews"]) for r in rows if r.get("train_reviews", "").isdigit()})
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
    minutes = sum(float(r["minutes"]) for r in rows if r.get("minutes"))
    minutes += sum(sum(r["time_s"] for r in json.loads(paths.log(a).read_text())) / 60
                   for a in exp.arms if paths.log(a).is_file())
    section = "\n\n".join([
        f"Budget: pretraining {budget.pretrain_steps} steps x {budget.pretrain_batch} x {budget.n_seq} tokens "
        f"({budget.pretrain_tokens / 1e6:.2f}M tokens per arm), dropout {budget.dropout:g}, peak lr "
        f"{budget.pretrain_lr:g}, beta2 {budget.beta2:g}; fine-tuning lr {budget.train_lr:g}, "
        + ", ".join(f"{size_label(s)}: {budget.epochs(s)} ep x batch {budget.batch(s)}" for s in sizes)
        + f"; the epoch picked on the fixed dev set of {NSMC_DEV_SIZE:,} reviews, test scored once. "
        f"Training time of the runs logged so far: {minutes:.0f} min.",
        pretraining_table(exp, paths, budget),
        "![pretraining curves](img/pretrain_arms.svg)",
        "Test accuracy (mean ± standard deviation over seeds, the count in brackets; "
        "the seed draws the labelled reviews and the initialization):",
        curve_table(exp, rows, sizes),
        "Gain over scratch in points, paired by seed (same labelled reviews):",
        "| Pretraining | Labelled | Gain (points) | Std of gain | Seeds |\n|---|---|---|---|---|\n" + "\n".join(gains)
        if gains else "No pair run yet.",
        "![label curve](img/label_curve.svg)",
        f"What helps at a tiny budget: each row changes one setting of the pretraining above and runs for "
        f"{budget.recipe_tokens / 1e6:.2f}M tokens on the {exp.recipe_arm} store (held-out loss at another "
        f"n_seq is over windows of that length: more context per token):",
        recipe_table(paths, budget),
        *(["![recipe curves](img/pretrain_recipe.svg)"] if recipe else []),
    ])
    readme = paths.readme
    update_readme(readme, section, BEGIN, END)
    img = readme.parent / "img"
    plot_curve(exp, rows, sizes, img / "label_curve.svg")
    arms = {arm.name: curve_log(paths.checkpoint(arm)) for arm in exp.arms}
    plot_pretraining({k: v for k, v in arms.items() if v is not None}, img / "pretrain_arms.svg",
                     "each arm on its own store's held-out tail (a run logged before the step log: its end only)",
                     tokens_per_step=budget.pretrain_batch * budget.n_seq)
    if recipe:
        plot_pretraining(recipe, img / "pretrain_recipe.svg",
                         f"the tiny-budget recipe rows ({budget.recipe_tokens / 1e6:.2f}M tokens each)")
    print(f"updated {_short(str(readme))} and img/label_curve.svg, pretrain_arms.svg"
          f"{', pretrain_recipe.svg' if recipe else ''} ({len(rows)} runs)")


def curve_log(checkpoint: Path) -> Path | None:
    """A pretraining run's step log, else its per-epoch log (older runs), else None (not run yet)."""
    for log in (checkpoint.with_suffix(STEPS_SUFFIX), checkpoint.with_suffix(".log.json")):
        if log.is_file():
            return log
    return None


# --- the script ------------------------------------------------------------------------

def experiment_main(exp: Experiment) -> None:
    parser = make_parser(f"The {exp.folder.name.upper()} experiment: pretraining arms at one token budget, then the "
                         f"label curve (scratch vs each arm, seeds at few labels) and TF-IDF; resumable.")
    parser.add_argument("--pretrain_steps", type=positive_int, default=800, help="pretraining steps of every arm")
    parser.add_argument("--pretrain_batch", type=positive_int, default=32, help="pretraining batch (windows)")
    parser.add_argument("--n_seq", type=positive_int, default=128, help="pretraining window length")
    parser.add_argument("--pretrain_lr", type=float, default=1e-3, help="pretraining peak learning rate")
    parser.add_argument("--pretrain_warmup", type=non_negative_int, default=40, help="pretraining warmup steps")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout during pretraining (fine-tuning keeps the config's)")
    parser.add_argument("--beta2", type=float, default=0.999, help="AdamW beta2 in pretraining")
    parser.add_argument("--sizes", type=non_negative_int, nargs="+", default=[1000, 5000, 20000, 0],
                        help="labelled reviews along the curve (0: all)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds at the small sizes")
    parser.add_argument("--seeded_up_to", type=non_negative_int, default=5000, help="sizes up to this get --seeds seeds")
    parser.add_argument("--train_lr", type=float, default=3e-4, help="fine-tuning peak learning rate")
    parser.add_argument("--train_batch", type=positive_int, default=64, help="fine-tuning batch above 2,000 reviews")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="torch.compile the pretraining step (fine-tuning is not compiled: its batches vary in "
                             "length, and on CPU the recompiles cost more than a short run gains)")
    parser.add_argument("--recipe_tokens", type=positive_int, default=1_638_400,
                        help="pretraining tokens of each row of the tiny-budget recipe table")
    parser.add_argument("--gpu", type=int, default=None, help="GPU index (None: cuda:0 if present, else the CPU)")
    parser.add_argument("--only", choices=["all", "report"], default="all",
                        help="report: redraw the README section and plot from the logs, run nothing")
    parser.add_argument("--out", default=rel(exp.folder / "experiment"),
                        help="results.csv, runs/ and the pretraining checkpoints and logs")
    parser.add_argument("--stores", default=rel(DATA_DIR), help="folder of the token stores data.py writes")
    parser.add_argument("--kowiki", default=rel(KOWIKI_JSON), help="kowiki.json from data/kowiki.py")
    parser.add_argument("--train", default=rel(NSMC_TRAIN_JSON), help="NSMC train file (from data/nsmc.py)")
    parser.add_argument("--test", default=rel(NSMC_TEST_JSON), help="NSMC test file (from data/nsmc.py)")
    parser.add_argument("--vocab", default=rel(DEFAULT_VOCAB), help="SentencePiece model")
    parser.add_argument("--config", default=rel(exp.folder / "config_half.json"), help="model config JSON")
    parser.add_argument("--readme", default=rel(exp.folder / "README.md"), help="README whose experiment section is redrawn")
    args = parser.parse_args()
    paths = Paths(*(Path(getattr(args, k)).resolve() for k in
                    ("out", "stores", "kowiki", "train", "test", "vocab", "config", "readme")))
    budget = Budget(args.pretrain_steps, args.pretrain_batch, args.n_seq, args.pretrain_lr, args.pretrain_warmup,
                    args.dropout, args.beta2, args.sizes, args.seeds, args.seeded_up_to, args.train_lr,
                    args.train_batch, args.compile, args.gpu, args.recipe_tokens)
    run_main(lambda: run_experiment(exp, paths, budget, args.only))
