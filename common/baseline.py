"""The non-neural baseline every results table carries: TF-IDF over character
1-4-grams (within word boundaries) + logistic regression, trained on the same
train split (the dev split carved out exactly as train.py does) and scored on
the same test file. It shows whether pretraining earns its keep.

    python -m common.baseline            # appends the row to gpt/, bert/, spanbert/ results.csv

Needs scikit-learn (pip install -r requirements-extra.txt).
"""
from __future__ import annotations

import time

import numpy as np

from common.cli import UserError, make_parser, run_main
from common.corpus import read_nsmc_json
from common.finetune import split_dev
from common.paths import NSMC_TEST_JSON, NSMC_TRAIN_JSON, REPO_ROOT, rel
from common.results import append_result, update_report
from common.vocab import normalize_text


def run_baseline(train_path: str, test_path: str, dev_ratio: float = 0.05, train_limit: int = 0,
                 c: float = 4.0, max_features: int = 500_000) -> dict:
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise UserError("scikit-learn is not installed (pip install -r requirements-extra.txt)")
    rows = read_nsmc_json(train_path)
    if train_limit:
        rows = rows[:train_limit]
    test = read_nsmc_json(test_path)
    train_idx, dev_idx = split_dev(len(rows), dev_ratio)
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
            "best_epoch": "-", "train_reviews": len(train), "dev_acc": round(dev_acc, 4),
            "test_loss": round(test_loss, 4), "test_acc": round(test_acc, 4), "minutes": round(minutes, 1),
            "device": "cpu", "note": "non-neural baseline (python -m common.baseline)"}


def main() -> None:
    parser = make_parser("TF-IDF (char 1-4-grams) + logistic regression baseline on NSMC; adds its row to results tables.")
    parser.add_argument("--train", default=rel(NSMC_TRAIN_JSON), help="NSMC train file (from data/nsmc.py)")
    parser.add_argument("--test", default=rel(NSMC_TEST_JSON), help="NSMC test file (from data/nsmc.py)")
    parser.add_argument("--dev_ratio", type=float, default=0.05, help="dev share carved from train (as train.py)")
    parser.add_argument("--train_limit", type=int, default=0, help="use only the first N train reviews (0: all)")
    parser.add_argument("--C", type=float, default=4.0, help="inverse regularization strength")
    parser.add_argument("--models", nargs="*", default=["gpt", "bert", "spanbert"],
                        help="model folders whose results.csv gets the row (none: print only)")
    args = parser.parse_args()

    def run() -> None:
        row = run_baseline(args.train, args.test, args.dev_ratio, args.train_limit, args.C)
        print(f"TF-IDF + logistic regression: dev acc {row['dev_acc']:.4f}, test acc {row['test_acc']:.4f} "
              f"({row['train_reviews']:,} train reviews, {row['minutes']} min)")
        for model in args.models:
            folder = REPO_ROOT / model
            append_result(folder / "results.csv", row)
            if (folder / "README.md").is_file():
                update_report(folder)

    run_main(run)


if __name__ == "__main__":
    main()
