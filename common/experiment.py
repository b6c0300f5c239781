"""The experiment behind every model's results: what pretraining buys, measured.

A model folder's experiment.py declares its pretraining arms (which text goes
into the store) and its fine-tuning variants (`common/experiment_report.py`); this
module runs the whole plan with one budget for every arm, and
`common/experiment_report.py` rebuilds the README's results section and
`img/label_curve.svg` from the logs:

1. pretraining: each arm's token store (its data.py), then the same number of
   steps x batch x n_seq tokens for every arm (its pretrain.py);
2. the label curve: train.py from scratch and from each pretraining at
   --sizes labelled reviews (seeds where the set is small), the epoch picked on
   the one fixed dev set (`common.nsmc.nsmc_split`), test scored once;
3. the TF-IDF baseline on the same labelled reviews.

Every run is a command printed before it runs, and logs a row in
`experiment/results.csv` (per-epoch logs in `experiment/runs/`). The plan is
resumable: a run whose row (or pretraining log) exists is skipped, so an
interrupted experiment goes on where it stopped (checkpoints are not in git: in
a fresh checkout an arm is pretrained again when a fine-tuning run needs it), and `--only report` redraws
the section from the logs alone. Runs are ordered so that a partial experiment
answers the main question first (the first arm against scratch at few labels).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from common.cli import (DATA_DIR, KOWIKI_JSON, NSMC_TEST_JSON, NSMC_TRAIN_JSON, UserError, add_gpu_option,
                        add_vocab_option, make_parser, non_negative_int, positive_int, rel, run_main)
from common.experiment_report import (SCRATCH, STEPS_SUFFIX, TAKEN_OVER, Arm, Budget, Experiment, Paths, Run, item_name,
                                      only_arms, plan, recipe_budget, recipe_checkpoint, report, store_path)
from common.io import read_csv
from common.results import append_result
from common.token_store import TokenStore


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


def pretrain_arm(exp: Experiment, paths: Paths, arm: Arm, budget: Budget, checkpoint: Path | None = None,
                 need_weights: bool = False) -> None:
    """data.py for the arm's store (kept if built), then pretrain.py at `budget` (resumed if interrupted).

    A finished run is skipped: its log is all the report needs. A fine-tuning run needs the weights too
    (`need_weights`); they are not in git, so in a fresh checkout the same pretraining runs again."""
    checkpoint = checkpoint or paths.checkpoint(arm)
    log = checkpoint.with_suffix(".log.json")
    finished = log.is_file() and json.loads(log.read_text())[-1]["step"] >= budget.pretrain_steps
    if finished and (checkpoint.exists() or not need_weights):
        if not need_weights:  # (a fine-tuning run's check says nothing when the weights are there)
            print(f"pretraining {_short(str(checkpoint))}: done")
        return
    if finished:
        print(f"pretraining {_short(str(checkpoint))}: logged, but its weights are not on disk (a fresh checkout): "
              f"pretraining it again with the same budget", flush=True)
        for stale in (log, checkpoint.with_suffix(STEPS_SUFFIX)):  # the run writes its own; stopped midway, it resumes
            stale.unlink(missing_ok=True)  # (a run logged before the step log has no steps.csv)
    store = str(store_path(exp, paths, arm, budget.n_seq))
    text = ["--input", str(paths.kowiki) if arm.kowiki else "none"]
    text += ["--extra", str(paths.train), "--test", str(paths.test)] if arm.reviews else []
    _run([sys.executable, "data.py", "--n_seq", str(budget.n_seq), "--output", store, *text, "--vocab", str(paths.vocab)],
         exp.folder)
    checkpoint.parent.mkdir(exist_ok=True)
    # --max_steps sets the schedule; --epoch only has to allow as many passes over the store as the budget needs
    # (a budget longer than the store, the encoders' review text, reads it more than once, masked anew each time)
    store_tokens = int(TokenStore(store).meta.get("n_tokens", 0))
    passes = math.ceil(budget.pretrain_tokens / store_tokens) + 1 if store_tokens else 1
    _run([sys.executable, "pretrain.py", "--input", store, "--save", str(checkpoint), "--vocab", str(paths.vocab),
          "--config", str(paths.config), "--dropout", f"{budget.dropout:g}", "--batch", str(budget.pretrain_batch),
          "--max_steps", str(budget.pretrain_steps), "--epoch", str(passes), "--lr", f"{budget.pretrain_lr:g}",
          "--warmup", str(budget.pretrain_warmup), "--beta2", f"{budget.beta2:g}", "--save_every", "50",
          *(["--compile"] if budget.compile else []), "--resume", "auto", *_gpu_args(budget)], exp.folder)


def note(budget: Budget, run: Run) -> str:
    """The run's budget in its results row: the fine-tuning's, and the pretraining's unless from scratch
    (a scratch row stays valid, and is taken over by a twin, whatever the pretraining budget)."""
    finetuning = f"{budget.epochs(run.size)} ep, batch {budget.batch(run.size)}, lr {budget.train_lr:g}"
    if run.arm == SCRATCH:
        return finetuning
    return f"{finetuning}; pretrain {budget.pretrain_steps} x {budget.pretrain_batch}x{budget.n_seq} tok"


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


def twin_scratch_row(exp: Experiment, paths: Paths, run: Run, budget: Budget) -> dict[str, str] | None:
    """The scratch twin's logged row of `run` (see Experiment.scratch_twin), or None: rows are shared between
    the two folders' default logs only, and only when the config and the fine-tuning budget are the same."""
    twin = exp.scratch_twin
    if twin is None or run.arm != SCRATCH or paths.out != exp.default_out.resolve():
        return None
    twin_config = twin.folder / twin.config
    if not (twin_config.is_file() and paths.config.is_file()):
        return None
    if json.loads(paths.config.read_text()) != json.loads(twin_config.read_text()):
        return None
    item = item_name(SCRATCH, next(iter(twin.variants)), run.size, run.seed)
    return next((r for r in read_csv(twin.default_out / "results.csv")
                 if r["item"] == item and r["note"] == note(budget, run)), None)


def take_twin_row(exp: Experiment, paths: Paths, run: Run, row: dict[str, str]) -> None:
    twin = exp.twin_out
    append_result(paths.out / "results.csv", {**row, "item": run.item, "variant": run.variant or "-",
                                              "note": f"{row['note']}; run {row['item']} of {twin} {TAKEN_OVER}"})
    print(f"\n{run.item}: the same run as {row['item']} in {twin}/results.csv (test acc {row['test_acc']}), "
          f"taken over", flush=True)


def tfidf_run(paths: Paths, run: Run) -> None:
    from common.baseline import run_baseline

    print(f"\n$ python -m common.baseline --train_limit {run.size} --seed {run.seed} --models  (row {run.item})", flush=True)
    row = run_baseline(str(paths.train), str(paths.test), train_limit=run.size, seed=run.seed)
    append_result(paths.out / "results.csv", {**row, "item": run.item, "seed": run.seed})
    print(f"TF-IDF at {row['train_reviews']:,} reviews: test acc {row['test_acc']:.4f}")


def run_experiment(exp: Experiment, paths: Paths, budget: Budget, only: str, arms: list[str] | None = None) -> None:
    """Run the plan's steps not yet logged (those of `arms` and the baselines, when given), then redraw the report."""
    paths.out.mkdir(exist_ok=True)
    done = {r["item"] for r in read_csv(paths.out / "results.csv")}
    if only == "recipe" and exp.recipe_arm is None:
        raise UserError(f"{exp.folder.name}'s experiment declares no recipe table (its recipe_arm is None)")
    if only != "report":
        steps = plan(exp, budget)
        for kind, step in steps if arms is None else only_arms(steps, exp, arms):
            if only == "recipe" and kind != "recipe":
                continue
            if kind == "pretrain":
                pretrain_arm(exp, paths, step, budget)
            elif kind == "recipe":
                name, changes = step
                pretrain_arm(exp, paths, exp.arm(exp.recipe_arm), recipe_budget(budget, changes), recipe_checkpoint(paths, name))
            elif step.item in done:
                continue
            elif kind == "tfidf":
                tfidf_run(paths, step)
            elif (twin_row := twin_scratch_row(exp, paths, step, budget)) is not None:
                take_twin_row(exp, paths, step, twin_row)
            else:
                finetune_run(exp, paths, step, budget)
            report(exp, paths, budget)  # after every run: the README shows what has been measured so far
    report(exp, paths, budget)


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
    add_gpu_option(parser)
    names = [a.name for a in exp.arms]
    parser.add_argument("--arms", nargs="+", choices=names, default=names, metavar="ARM",
                        help=f"pretrained arms to pretrain and fine-tune, of {', '.join(names)} (scratch and TF-IDF "
                             "always run); fewer arms, a shorter run; the report shows every arm logged")
    parser.add_argument("--only", choices=["all", "report", "recipe"], default="all",
                        help="report: redraw the README section and plot from the logs, run nothing; recipe: run "
                             "only the tiny-budget recipe table's rows (they need no other run)")
    parser.add_argument("--out", default=rel(exp.default_out),
                        help="results.csv, runs/ and the pretraining checkpoints and logs")
    parser.add_argument("--stores", default=rel(DATA_DIR), help="folder of the token stores data.py writes")
    parser.add_argument("--kowiki", default=rel(KOWIKI_JSON), help="kowiki.json from data/kowiki.py")
    parser.add_argument("--train", default=rel(NSMC_TRAIN_JSON), help="NSMC train file (from data/nsmc.py)")
    parser.add_argument("--test", default=rel(NSMC_TEST_JSON), help="NSMC test file (from data/nsmc.py)")
    add_vocab_option(parser)
    parser.add_argument("--config", default=rel(exp.folder / exp.config), help="model config JSON")
    parser.add_argument("--readme", default=rel(exp.folder / "README.md"), help="README whose experiment section is redrawn")
    parser.set_defaults(**exp.defaults)
    args = parser.parse_args()
    paths = Paths(*(Path(getattr(args, k)).resolve() for k in
                    ("out", "stores", "kowiki", "train", "test", "vocab", "config", "readme")))
    budget = Budget(args.pretrain_steps, args.pretrain_batch, args.n_seq, args.pretrain_lr, args.pretrain_warmup,
                    args.dropout, args.beta2, args.sizes, args.seeds, args.seeded_up_to, args.train_lr,
                    args.train_batch, args.compile, args.gpu, args.recipe_tokens)
    run_main(lambda: run_experiment(exp, paths, budget, args.only, args.arms))
