"""What pretraining buys GPT on NSMC: the experiment behind README.md's results.

Three pretrainings at one token budget, each a token store of data.py:
- reviews: the NSMC train split's review text alone (task-adaptive pretraining,
  Gururangan et al. 2020; the dev split is left out, the test file refused);
- kowiki: the Wikipedia slice alone, as GPT-1's recipe (out-of-domain text);
- kowiki+reviews: the Wikipedia slice with the review text in front.
Then train.py from scratch and from each, along the label curve, and with GPT-1's
auxiliary LM loss (--lm 0.5) from the first. See common/experiment_report.py.

    python experiment.py            # everything, resumable: about 7-8 hours on a 2-core CPU
                                    # (--sizes 1000 5000 0 and --arms kowiki shorten it)
    python experiment.py --only report
"""
from pathlib import Path

from common.experiment import Experiment, experiment_main

EXPERIMENT = Experiment(
    folder=Path(__file__).resolve().parent,
    variants={"lm0": ["--lm", "0"], "lm0.5": ["--lm", "0.5"]},
    first_arm_only=["lm0.5"],
    recipe_arm="kowiki",
    heldout_columns=[("Held-out next-token acc", "")],
    loss_is_lm=True,
)

if __name__ == "__main__":
    experiment_main(EXPERIMENT)
