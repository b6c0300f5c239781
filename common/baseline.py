"""The non-neural baseline every results table carries: TF-IDF over character
1-4-grams (within word boundaries) + logistic regression, trained on the same
train split (the dev split carved out exactly as train.py does) and scored on
the same test file. It shows whether pretraining earns its keep. `--train_limit N
--seed S` draws the same N labelled reviews as train.py with those options.

    python -m common.baseline            # appends the row to gpt/, bert/, spanbert/ results.csv

Needs scikit-learn (pip install -r requirements-extra.txt).
"""
from __future__ import annotations

import time

import numpy as np

from common.cli import (NSMC_TEST_JSON, NSMC_TRAIN_JSON, REPO_ROOT, UserError, make_parser, non_negative_int, rel,
                        run_main)
from common.nsmc import NSMC_DEV_SIZE, labelled_subset, nsmc_split, read_nsmc_json
from common.results import append_result
from common.vocab import normalize_text


def run_baseline(train_path: str, test_path: str, dev_size: int | None = None, train_limit: int = 0, seed: int = 42,
                 c: float = 4.0, max_features: int = 500_000) -> dict:
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise UserError("scikit-learn is not installed (pip install -r requirements-extra.txt)")
    rows = read_nsmc_json(train_path)
    test = read_nsmc_json(test_path)
    pool, dev_idx = nsmc_split(len(rows), dev_size)
    train_idx = labelled_subset(pool, train_limit, seed)
    text = lambda rs: [normalize_text(r["document"]) for r in rs]  # noqa: E731 - the same normalization as the models
    labels = lambda rs: np.array([r["label"] for r in rs])  # noqa: E731
    train, dev = [rows[i] for i in train_idx], [rows[i] for i in dev_idx]
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2,
                                 max_features=max_features)
    x_train = vectorizer.fit_transform(text(train))
    classifier = LogisticRegression(C=c, max_iter=2000)
    classifier.fit(x_train, labels(train))
    dev_acc = float((classifier.predict(vectorizer.transform(text(dev))) == labels(dev)).mean())
    x_test = vectorizer.transform(text(test))
    probs = classifier.predict_proba(x_test)
    y_test = labels(test)
    test_acc = float((probs.argmax(1) == y_test).mean())
    test_loss = float(-np.log(np.clip(probs[np.arange(len(y_test)), y_test], 1e-12, None)).mean())
    minutes = (time.perf_counter() - start) / 60
    return {"item": "tfidf-char1-4+logreg", "pretrain": "none", "variant": f"C={c:g}", "epochs": "-",
            "best_epoch": "-", "train_reviews": len(train), "seed": seed if train_limit else "-", "dev_acc": round(dev_acc, 4),
            "test_loss": round(test_loss, 4), "test_acc": round(test_acc, 4), "minutes": round(minutes, 1),
            "device": "cpu", "note": "non-neural baseline (python -m common.baseline)"}


def main() -> None:
    parser = make_parser("TF-IDF (char 1-4-grams) + logistic regression baseline on NSMC; adds its row to results tables.")
    parser.add_argument("--train", default=rel(NSMC_TRAIN_JSON), help="NSMC train file (from data/nsmc.py)")
    parser.add_argument("--test", default=rel(NSMC_TEST_JSON), help="NSMC test file (from data/nsmc.py)")
    parser.add_argument("--dev_size", type=non_negative_int, default=0,
                        help=f"dev reviews carved from train, as train.py (0: {NSMC_DEV_SIZE:,}, or 5%% of a smaller file)")
    parser.add_argument("--train_limit", type=non_negative_int, default=0,
                        help="labelled reviews: a random N of the non-dev reviews drawn with --seed, as train.py (0: all)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the --train_limit draw")
    parser.add_argument("--item", default="tfidf-char1-4+logreg", help="name of the row in the results table")
    parser.add_argument("--C", type=float, default=4.0, help="inverse regularization strength")
    parser.add_argument("--models", nargs="*", default=None,
                        help="model folders whose results.csv gets the row (default: every folder with a train.py; "
                             "none given: print only)")
    args = parser.parse_args()

    def run() -> None:
        row = {**run_baseline(args.train, args.test, args.dev_size or None, args.train_limit, args.seed, args.C), "item": args.item}
        print(f"TF-IDF + logistic regression: dev acc {row['dev_acc']:.4f}, test acc {row['test_acc']:.4f} "
              f"({row['train_reviews']:,} train reviews, {row['minutes']} min)")
        models = args.models if args.models is not None else sorted(
            p.name for p in REPO_ROOT.iterdir() if (p / "train.py").is_file())
        for model in models:
            folder = REPO_ROOT / model
            append_result(folder / "results.csv", row)

    run_main(run)


if __name__ == "__main__":
    main()
