"""What pretraining buys SpanBERT on NSMC: the experiment behind README.md's results.

Three pretrainings at one token budget (span masking, MLM + SBO), each a token store of data.py:
- reviews: the NSMC train split's review text alone (task-adaptive pretraining,
  Gururangan et al. 2020; the dev split is left out, the test file refused),
  packed into [CLS] r1 [SEP] r2 [SEP] ... segments (a span never crosses a [SEP]);
  first, as in BERT's experiment: the task's own text, and the arm the two encoders are compared on;
- kowiki: the Wikipedia slice alone, SpanBERT's own kind of text;
- kowiki+reviews: the Wikipedia segments with the packed reviews in front.
Then train.py from scratch and from each, along the label curve, with the classifier
on [CLS] (the plain runs) and, from the first pretraining, on the mean and the max of
the hidden states (--logit). See common/experiment_report.py.

    python experiment.py            # everything, resumable (--sizes 1000 5000 0 and --arms kowiki shorten it)
    python experiment.py --only report
"""
from pathlib import Path

from bert.experiment import EXPERIMENT as BERT_EXPERIMENT
from common.experiment import Arm, Experiment, experiment_main

EXPERIMENT = Experiment(
    folder=Path(__file__).resolve().parent,
    variants={"cls": ["--logit", "cls"], "mean": ["--logit", "mean"], "max": ["--logit", "max"]},
    # the task's own text first, as BERT's (the arm the two encoders are compared on), then Wikipedia
    arms=[Arm("reviews", kowiki=False, reviews=True), Arm("kowiki", kowiki=True, reviews=False),
          Arm("kowiki+reviews", kowiki=True, reviews=True)],
    first_arm_only=["mean", "max"],
    heldout_columns=[("Held-out MLM acc", "mlm"), ("Held-out SBO acc", "sbo")],
    # the same encoder and budget pretrained with whole-word MLM + NSP: the comparison SpanBERT's paper makes
    beside=[("BERT", BERT_EXPERIMENT)],
    # on [CLS] without pretraining this is BERT's classifier, run for run (tests/test_spanbert.py): its scratch
    # rows are taken from ../bert/experiment where they are logged at the same budget
    scratch_twin=BERT_EXPERIMENT,
    config="experiment/config.json",  # BERT's: config_half.json with rotary attention (../bert/README.md)
    defaults={"pretrain_steps": 3200},  # BERT's budget, four times GPT's (../bert/README.md): one budget for both
)

if __name__ == "__main__":
    experiment_main(EXPERIMENT)
