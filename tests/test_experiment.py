"""The experiment harness (common/experiment.py) run end to end on the sample corpus with a tiny
budget: every arm pretrained at the same token budget, the label curve with seeds, TF-IDF, the
README section and the plot; a second run skips everything already logged."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from common.cli import REPO_ROOT
from common.experiment import Budget, Experiment, item_name, only_arms, plan
from common.io import read_csv, write_csv

README = "# GPT\n\nbefore\n<!-- experiment:begin -->\nold\n<!-- experiment:end -->\nafter\n"


def test_experiment_end_to_end(tmp_path: Path, sample_corpus, sample_vocab, write_config, run_script) -> None:
    pytest.importorskip("sklearn")
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    config = write_config(tmp_path / "tiny.json", n_seq=64)  # the recipe table doubles n_seq
    args = ["--out", tmp_path / "experiment", "--stores", tmp_path, "--kowiki", sample_corpus["kowiki"],
            "--train", sample_corpus["train"], "--test", sample_corpus["test"], "--vocab", sample_vocab,
            "--config", config, "--readme", readme, "--pretrain_steps", "3", "--pretrain_batch", "4",
            "--n_seq", "32", "--pretrain_warmup", "1", "--sizes", "60", "--seeds", "2", "--seeded_up_to", "60",
            "--train_batch", "16", "--recipe_tokens", "256"]
    done = run_script("experiment.py", *args, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    rows = {r["item"]: r for r in read_csv(tmp_path / "experiment" / "results.csv")}
    arms = ["scratch-lm0", "reviews-lm0", "kowiki+reviews-lm0", "kowiki-lm0", "reviews-lm0.5", "tfidf"]
    assert set(rows) == {f"{a}-n60-s{s}" for a in arms for s in (1, 2)}
    assert all(r["train_reviews"] == "60" for r in rows.values())
    # a seed draws the labelled reviews; the same seed is the same subset for every arm (paired gains)
    assert rows["scratch-lm0-n60-s1"]["seed"] == "1" and rows["reviews-lm0-n60-s2"]["seed"] == "2"
    for arm in ("reviews", "kowiki_reviews", "kowiki"):  # one token budget for every arm
        log = json.loads((tmp_path / "experiment" / f"save_pretrain_{arm}.log.json").read_text())
        assert log[-1]["step"] == 3 and log[-1]["batch"] == 4 and log[-1]["n_seq"] == 32
    meta = {arm: json.loads((tmp_path / f"{arm}_gpt32" / "meta.json").read_text())
            for arm in ("reviews", "kowiki_reviews", "kowiki")}
    assert meta["reviews"]["n_articles"] == 0 and meta["reviews"]["n_reviews"] > 0
    assert meta["kowiki"]["n_reviews"] == 0 and meta["kowiki_reviews"]["n_reviews"] == meta["reviews"]["n_reviews"]

    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# GPT\n\nbefore\n") and text.endswith("after\n") and "old" not in text
    assert "| 60 | " in text and "± " in text and "Gain over scratch" in text
    assert (tmp_path / "img" / "label_curve.svg").read_text().startswith("<?xml")
    # the recipe table: one setting changed per row, the same tokens for every row (2 x 4 x 32 = 1 x 2 x 64)
    recipe = {p.name.removesuffix(".log.json"): json.loads(p.read_text())[-1] for p in (tmp_path / "experiment" / "recipe").glob("*.log.json")}
    assert len(recipe) == 7 and all(r["step"] * r["batch"] * r["n_seq"] == 256 for r in recipe.values())
    assert recipe["n_seq_x2__batch___2"]["n_seq"] == 64 and "| dropout 0.1 | 2 x 4 x 32 | " in text

    again = run_script("experiment.py", *args, timeout=300)  # everything logged: nothing runs again
    assert again.returncode == 0, again.stderr[-2000:]
    assert "train.py" not in again.stdout and again.stdout.count(": done") == 3 + 7

    # a fresh checkout: the logs are in git, the weights are not; a run that needs an arm's weights
    # pretrains that arm again with the same budget, and nothing else runs
    for weights in (tmp_path / "experiment").glob("save_pretrain_kowiki.pth*"):
        weights.unlink()
    (tmp_path / "experiment" / "save_pretrain_kowiki.steps.csv").unlink()  # as an arm logged before step logs
    results = tmp_path / "experiment" / "results.csv"
    write_csv(results, [r for r in read_csv(results) if r["item"] != "kowiki-lm0-n60-s2"])
    fresh = run_script("experiment.py", *args, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "weights are not on disk" in fresh.stdout
    assert fresh.stdout.count("python pretrain.py") == 1 and fresh.stdout.count("python train.py") == 1
    assert "kowiki-lm0-n60-s2" in {r["item"] for r in read_csv(results)}
    assert json.loads((tmp_path / "experiment" / "save_pretrain_kowiki.log.json").read_text())[-1]["step"] == 3


def test_item_names() -> None:
    assert item_name("scratch", "lm0", 1000, 2) == "scratch-lm0-n1k-s2"
    assert item_name("tfidf", "", 0, 1) == "tfidf-nall-s1"
    assert item_name("kowiki", "lm0", 1500, None) == "kowiki-lm0-n1500-s"


def test_a_line_of_the_curve_breaks_where_it_has_no_run() -> None:
    """A size that other lines ran but this one did not is a gap in its line (NaN), not a segment drawn across
    it; sizes before its first run and after its last are left off."""
    from common.experiment_report import curve_points

    rows = [{"item": item_name(arm, "max", size, 1), "test_acc": acc, "train_reviews": n}
            for arm, size, n, acc in (("kowiki", 1000, 1000, 0.70), ("scratch", 5000, 5000, 0.76),
                                      ("kowiki", 20000, 20000, 0.80), ("scratch", 0, 144995, 0.82))]
    points = curve_points(rows, "kowiki", "max", [1000, 5000, 20000, 0])
    assert [n for n, _, _ in points] == [1000, 5000, 20000]
    assert points[0][1:] == (0.70, 0.0) and points[2][1] == 0.80 and math.isnan(points[1][1])
    assert curve_points(rows, "scratch", "max", [1000, 5000, 20000, 0])[0][0] == 5000


def test_only_arms_keeps_the_baselines_and_the_named_arms() -> None:
    exp = Experiment(folder=Path("."), variants={"": []}, recipe_arm="reviews")
    budget = Budget(10, 4, 32, 1e-3, 1, 0.0, 0.999, [1000, 0], 2, 1000, 3e-4, 16, False, None)
    steps = plan(exp, budget)
    kept = only_arms(steps, exp, ["kowiki"])
    pretrained = [s.name for kind, s in kept if kind == "pretrain"]
    runs = [s.item for kind, s in kept if kind in ("finetune", "tfidf")]
    assert pretrained == ["kowiki"] and not any(kind == "recipe" for kind, _ in kept)
    assert runs == [s.item for kind, s in steps if kind in ("finetune", "tfidf") and s.arm != "reviews"
                    and s.arm != "kowiki+reviews"]
    assert {s.arm for kind, s in kept if kind == "finetune"} == {"scratch", "kowiki"}
    assert only_arms(steps, exp, [a.name for a in exp.arms]) == steps
    with pytest.raises(ValueError, match="unknown arm"):
        only_arms(steps, exp, ["books"])


@pytest.mark.parametrize("model", ["bert", "spanbert"])
def test_encoder_experiment_runs_every_arm(model: str, tmp_path: Path, sample_corpus, sample_vocab,
                                           write_config, run_script) -> None:
    """The same harness for the encoders: their arms' stores (reviews packed in front), the curve, the
    report with the encoder's held-out columns (BERT: NSP beside its constant guess; none without pairs)."""
    pytest.importorskip("sklearn")
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    config = write_config(tmp_path / "tiny.json", n_segment=2)
    args = ["--out", tmp_path / "experiment", "--stores", tmp_path, "--kowiki", sample_corpus["kowiki"],
            "--train", sample_corpus["train"], "--test", sample_corpus["test"], "--vocab", sample_vocab,
            "--config", config, "--readme", readme, "--pretrain_steps", "2", "--pretrain_batch", "4",
            "--n_seq", "32", "--pretrain_warmup", "1", "--sizes", "60", "--seeds", "1", "--seeded_up_to", "60",
            "--train_batch", "16", "--no-compile"]
    done = run_script("experiment.py", *args, cwd=REPO_ROOT / model, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["item"] for r in read_csv(tmp_path / "experiment" / "results.csv")}
    plain = "" if model == "bert" else "cls"
    arms = ["scratch", "reviews", "kowiki", "kowiki+reviews"]
    expected = {item_name(a, plain, 60, 1) for a in arms} | {item_name("tfidf", "", 60, 1)}
    if model == "spanbert":  # the pooling variants, from the first pretraining (the reviews)
        expected |= {item_name("reviews", v, 60, 1) for v in ("mean", "max")}
    assert rows == expected
    meta = json.loads((tmp_path / f"reviews_{model}32" / "meta.json").read_text())
    assert meta["n_articles"] == 0 and meta["n_instances"] == meta["n_review_instances"] > 0
    text = readme.read_text(encoding="utf-8")
    assert "Held-out MLM acc" in text and "What helps at a tiny budget" not in text
    if model == "bert":
        table = text[text.index("| Pretraining | Store tokens"):].split("\n\n")[0]
        reviews_row = next(line for line in table.splitlines() if line.startswith("| reviews |"))
        kowiki_row = next(line for line in table.splitlines() if line.startswith("| kowiki |"))
        assert "| none |" in reviews_row and re.search(r"\| 0\.\d{3} \(0\.\d{3}\) \|", kowiki_row)


def test_only_recipe_runs_the_recipe_rows_alone(tmp_path: Path, sample_corpus, sample_vocab, write_config,
                                                run_script) -> None:
    config = write_config(tmp_path / "tiny.json", n_seq=64)
    args = ["--out", tmp_path / "experiment", "--stores", tmp_path, "--kowiki", sample_corpus["kowiki"],
            "--train", sample_corpus["train"], "--test", sample_corpus["test"], "--vocab", sample_vocab,
            "--config", config, "--readme", tmp_path / "README.md", "--pretrain_steps", "3", "--pretrain_batch", "4",
            "--n_seq", "32", "--pretrain_warmup", "1", "--recipe_tokens", "256", "--no-compile", "--only", "recipe"]
    (tmp_path / "README.md").write_text(README, encoding="utf-8")
    done = run_script("experiment.py", *args, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "experiment" / "recipe").glob("*.log.json"))) == 7
    assert "python train.py" not in done.stdout and not (tmp_path / "experiment" / "results.csv").exists()
    assert not list(tmp_path.glob("reviews_*"))  # no arm but the recipe's was built
    refused = run_script("experiment.py", "--only", "recipe", cwd=REPO_ROOT / "bert")
    assert refused.returncode == 2 and "declares no recipe table" in refused.stderr


def test_another_models_curve_is_reported_beside(tmp_path: Path) -> None:
    """`Experiment.beside`: the other model's table comes from its own default logs, under the README's
    words for it; the plot draws its arms (and a model with no logs yet is said to have none)."""
    from common.experiment import Experiment, Paths
    from common.experiment_report import beside_tables, plot_curve

    other = Experiment(folder=tmp_path / "bert", variants={"": []})
    here = Experiment(folder=tmp_path / "spanbert", variants={"cls": ["--logit", "cls"]}, beside=[("BERT", other)])
    paths = Paths(out=tmp_path / "spanbert" / "experiment", stores=tmp_path, kowiki=tmp_path, train=tmp_path,
                  test=tmp_path, vocab=tmp_path, config=tmp_path, readme=tmp_path / "spanbert" / "README.md")
    assert beside_tables(here, paths, [1000]) == ["BERT: no run logged in `../bert/experiment/results.csv` yet."]
    other.default_out.mkdir(parents=True)
    write_csv(other.default_out / "results.csv", [
        {"item": item_name(arm, "", 1000, seed), "test_acc": acc, "train_reviews": 1000}
        for arm, seed, acc in (("scratch", 1, 0.70), ("reviews", 1, 0.72), ("reviews", 2, 0.74))])
    words, table = beside_tables(here, paths, [1000])
    assert words.startswith("BERT at the same budget") and "`../bert/experiment/results.csv`" in words
    row = next(line for line in table.splitlines() if line.startswith("| 1,000 |"))
    assert "0.7300 ± 0.0141 (2)" in row and "0.7000" in row
    plot_curve(here, [], [1000], tmp_path / "curve.svg")  # only the other model's lines: still a plot
    legend = re.findall(r"<!-- (.*?) -->", (tmp_path / "curve.svg").read_text(encoding="utf-8"))
    assert "BERT: reviews" in legend and not any(t.startswith("BERT: scratch") for t in legend)


def test_scratch_rows_of_a_twin_are_taken_over_at_the_same_budget(tmp_path: Path) -> None:
    """`Experiment.scratch_twin`: a scratch run the twin logged at the same fine-tuning budget and config is
    taken into this folder's log under its own item (noted as the twin's run); otherwise it is run here."""
    from common.experiment import Paths, Run, note, take_twin_row, twin_scratch_row

    twin = Experiment(folder=tmp_path / "bert", variants={"": []})
    here = Experiment(folder=tmp_path / "spanbert", variants={"cls": ["--logit", "cls"]}, scratch_twin=twin)
    for folder in (twin.folder, here.folder):
        folder.mkdir()
        (folder / "config_half.json").write_text(json.dumps({"n_layer": 2, "d_hidn": 32}))
    paths = Paths(out=here.default_out.resolve(), stores=tmp_path, kowiki=tmp_path, train=tmp_path, test=tmp_path,
                  vocab=tmp_path, config=here.folder / "config_half.json", readme=tmp_path / "README.md")
    budget = Budget(800, 32, 128, 1e-3, 40, 0.0, 0.999, [1000], 2, 5000, 3e-4, 64, False, None)
    run = Run(item_name("scratch", "cls", 1000, 2), "scratch", "cls", 1000, 2)
    assert twin_scratch_row(here, paths, run, budget) is None  # the twin logged nothing yet
    twin.default_out.mkdir()
    logged = {"item": item_name("scratch", "", 1000, 2), "pretrain": "none", "variant": "-", "train_reviews": 1000,
              "seed": 2, "test_acc": 0.7083, "minutes": 2.1, "note": note(budget, run)}
    write_csv(twin.default_out / "results.csv", [logged, {**logged, "item": item_name("scratch", "", 1000, 1)}])
    row = twin_scratch_row(here, paths, run, budget)
    assert row is not None and row["item"] == "scratch-n1k-s2"
    here.default_out.mkdir()
    take_twin_row(here, paths, run, row)
    taken = read_csv(here.default_out / "results.csv")
    assert [(r["item"], r["variant"], r["test_acc"]) for r in taken] == [("scratch-cls-n1k-s2", "cls", "0.7083")]
    assert taken[0]["note"].endswith("run scratch-n1k-s2 of ../bert/experiment (the same model)")
    assert here.taken_over(taken[0]) and not here.taken_over(row)  # (the report leaves it out of the time)
    longer_pretraining = Budget(**{**budget.__dict__, "pretrain_steps": 3200})  # scratch does not depend on it
    assert twin_scratch_row(here, paths, run, longer_pretraining) == row
    # not taken: another fine-tuning budget, another config, another log folder, a pretrained arm
    other_lr = Budget(**{**budget.__dict__, "train_lr": 1e-4})
    assert twin_scratch_row(here, paths, run, other_lr) is None
    (here.folder / "config_half.json").write_text(json.dumps({"n_layer": 4, "d_hidn": 32}))
    assert twin_scratch_row(here, paths, run, budget) is None
    (here.folder / "config_half.json").write_text(json.dumps({"n_layer": 2, "d_hidn": 32}))
    assert twin_scratch_row(here, Paths(**{**paths.__dict__, "out": tmp_path / "elsewhere"}), run, budget) is None
    assert twin_scratch_row(here, paths, Run("kowiki-cls-n1k-s2", "kowiki", "cls", 1000, 2), budget) is None
