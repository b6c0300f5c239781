"""What the experiment is: its arms, budget, paths, and the ordered plan of runs (common/experiment.py
runs it, common/experiment_report.py reports it)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

SCRATCH = "scratch"
TFIDF = "tfidf"
TAKEN_OVER = "(the same model)"  # the end of the note of a row taken over from the scratch twin's log


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
    variants: dict[str, list[str]]  # fine-tuning variant -> train.py options; the first is the plain one
    # the pretrainings, in priority order (the first is run against scratch first): by default the task's own
    # text (task-adaptive pretraining, Gururangan et al. 2020), the Wikipedia slice (the papers' kind of text),
    # and the two together (the review text in front of the articles)
    arms: list[Arm] = field(default_factory=lambda: [Arm("reviews", kowiki=False, reviews=True),
                                                     Arm("kowiki", kowiki=True, reviews=False),
                                                     Arm("kowiki+reviews", kowiki=True, reviews=True)])
    # variants run only with the first arm (e.g. GPT's auxiliary LM loss), besides the plain one
    first_arm_only: list[str] = field(default_factory=list)
    recipe_arm: str | None = None  # the arm whose store the tiny-budget recipe table pretrains on (None: no table)
    # the held-out accuracy columns of the pretraining table: (heading, head) -> the log's heldout_<head>_acc
    # ("" for a model with one head: heldout_acc); a head that logs a share of positives `<head>_next` (BERT's
    # NSP) shows beside its accuracy the accuracy of a constant guess, max(next, 1 - next)
    heldout_columns: list[tuple[str, str]] = field(default_factory=lambda: [("Held-out acc", "")])
    loss_is_lm: bool = False  # the held-out loss is one language model's: shown with its perplexity
    defaults: dict[str, object] = field(default_factory=dict)  # experiment.py's option defaults for this model
    # other models' experiments whose pretrained arms the label curve draws beside this one's (label, experiment),
    # read from their default logs (<folder>/experiment/results.csv): e.g. the same encoder pretrained otherwise
    beside: list[tuple[str, Experiment]] = field(default_factory=list)
    # an experiment whose scratch runs are this one's, number for number: the same classifier, initialized from
    # the same seed, fine-tuned by the same flow (one encoder's classifier in two model folders). Its scratch rows
    # logged at the same budget and config are taken over instead of run again; the missing ones run here.
    scratch_twin: Experiment | None = None
    # the model config of every run, relative to the folder: the encoders' experiments use
    # experiment/config.json (config_half.json with rotary attention, see bert/README.md)
    config: str = "config_half.json"

    @property
    def twin_out(self) -> str:
        """Where the scratch twin logs, as this folder reaches it (`../bert/experiment`)."""
        return Path(os.path.relpath(self.scratch_twin.default_out, self.folder)).as_posix()

    def taken_over(self, row: dict[str, str]) -> bool:
        """Whether a results row is the scratch twin's run, taken over (its note says so)."""
        return self.scratch_twin is not None and row.get("note", "").endswith(TAKEN_OVER)

    @property
    def default_out(self) -> Path:
        """Where experiment.py writes its logs unless told otherwise (--out)."""
        return self.folder / "experiment"

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
    if exp.recipe_arm is not None:
        steps += [("recipe", r) for r in RECIPE]
    return steps


def only_arms(steps: list[tuple[str, object]], exp: Experiment, arms: list[str]) -> list[tuple[str, object]]:
    """The plan's steps without the pretrained arms left out of `arms` (their pretraining, their runs and,
    for the recipe arm, the recipe rows); scratch and TF-IDF stay: the baselines every arm is read against."""
    unknown = sorted(set(arms) - {a.name for a in exp.arms})
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}; the arms are {', '.join(a.name for a in exp.arms)}")

    def kept(kind: str, step: object) -> bool:
        if kind == "pretrain":
            return step.name in arms
        if kind == "recipe":
            return exp.recipe_arm in arms
        return step.arm in (SCRATCH, TFIDF) or step.arm in arms

    return [(kind, step) for kind, step in steps if kept(kind, step)]


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


def store_path(exp: Experiment, paths: Paths, arm: Arm, n_seq: int) -> Path:
    return paths.stores / f"{arm.slug}_{exp.folder.name}{n_seq}"
