"""Run the whole chain on the sample corpus shipped in data/sample, in a few minutes on a CPU:

    build the vocab -> kowiki.json + NSMC json -> GPT data.py -> pretrain.py -> train.py
    -> print the loss/accuracy table and write the plots

Each step is the same command a user runs by hand (printed before it runs);
everything is written under --workdir, so the real data, vocab and results
of the repository are never touched.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from common.cli import REPO_ROOT, SAMPLE_DIR, UserError, make_parser, positive_int, run_main
from common.experiment_report import plot_runs
from common.io import read_csv, write_json
from common.results import results_table

# The sample corpus is ~100 KB: a 2-layer model learns from it in seconds, where the
# half-size model would need far more text and time than a quickstart has.
SAMPLE_CONFIG = {"n_layer": 2, "d_hidn": 128, "n_head": 4, "d_ff": 512, "n_seq": 128, "dropout": 0.1}


def main() -> None:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="quickstart", help="folder for everything the chain writes")
    parser.add_argument("--vocab_size", type=positive_int, default=3000, help="learned pieces of the sample vocab")
    parser.add_argument("--pretrain_epochs", type=positive_int, default=10, help="GPT pretraining epochs on the sample")
    parser.add_argument("--train_epochs", type=positive_int, default=8, help="NSMC fine-tuning epochs on the sample")
    parser.add_argument("--config", default=None,
                        help="GPT config (default: a small 2-layer config written to the workdir, sized for the "
                             "~100 KB sample; gpt/config_half.json is the real half-size model)")
    parser.add_argument("--gpu", type=int, default=None, help="GPU index (default: cuda:0 if present, else CPU)")
    args = parser.parse_args()
    run_main(lambda: quickstart(args))


def quickstart(args) -> None:
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    gpu = ["--gpu", str(args.gpu)] if args.gpu is not None else []
    vocab = work / "vocab.model"
    kowiki, train, test = work / "kowiki.json", work / "ratings_train.json", work / "ratings_test.json"
    store, pretrain, best = work / "kowiki_gpt", work / "save_pretrain.pth", work / "save_best.pth"
    results = work / "results.csv"
    config = args.config
    if config is None:
        config = str(work / "config_sample.json")
        write_json(config, SAMPLE_CONFIG)
    for stale in (pretrain, best, best.with_suffix(".state.pth"), results):
        stale.unlink(missing_ok=True)  # a rerun starts the chain over
    py = sys.executable
    steps = [
        ("corpus", REPO_ROOT, [py, "data/kowiki.py", "--input", str(SAMPLE_DIR / "kowiki"), "--output", str(kowiki)]),
        ("reviews", REPO_ROOT, [py, "data/nsmc.py", "--train", str(SAMPLE_DIR / "nsmc" / "ratings_train.txt"),
                                "--test", str(SAMPLE_DIR / "nsmc" / "ratings_test.txt"),
                                "--train_output", str(train), "--test_output", str(test)]),
        ("vocab", REPO_ROOT, [py, "vocab/build.py", "--input", str(kowiki), "--prefix", str(work / "vocab"),
                              "--vocab_size", str(args.vocab_size)]),
        ("gpt data", REPO_ROOT / "gpt", [py, "data.py", "--input", str(kowiki), "--output", str(store),
                                         "--vocab", str(vocab), "--n_seq", "128", "--force"]),
        ("pretrain", REPO_ROOT / "gpt", [py, "pretrain.py", "--input", str(store), "--vocab", str(vocab),
                                         "--config", config, "--save", str(pretrain), "--epoch",
                                         str(args.pretrain_epochs), "--batch", "16", "--lr", "1e-3", *gpu]),
        ("fine-tune", REPO_ROOT / "gpt", [py, "train.py", "--train", str(train), "--test", str(test),
                                          "--vocab", str(vocab), "--config", config, "--pretrain", str(pretrain),
                                          "--save", str(best), "--results", str(results), "--epoch",
                                          str(args.train_epochs), "--batch", "16", "--lr", "5e-4", "--lm", "0.5", *gpu]),
    ]
    start = time.perf_counter()
    for name, cwd, cmd in steps:
        shown = " ".join(shlex.quote(c if c != py else "python") for c in cmd)
        print(f"\n== {name}: (cd {cwd.relative_to(REPO_ROOT)} && {shown})", flush=True)
        if subprocess.run(cmd, cwd=cwd).returncode != 0:
            raise UserError(f"step '{name}' failed (its message is above); the command is printed before it")
    rows = read_csv(results)
    plots = plot_runs(sorted((work / "runs").glob("*.csv")), work / "img")
    print("\n" + results_table(rows))
    print(f"\nplots: {', '.join(str(p) for p in plots)}")
    print(f"quickstart finished in {time.perf_counter() - start:.0f} s (sample corpus: numbers show the chain works, "
          f"not what the models can do; see each model's README for real runs)")


if __name__ == "__main__":
    main()
