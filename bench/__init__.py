"""Speed and memory benchmarks against the reference implementations (issue #9).

    python -m bench.run                                   # full run on the real data -> bench/README.md
    python -m bench.run --quick --report /tmp/bench.md    # the sample corpus, in about a minute (CI)

Modules: `run` (options, the order of the cases), `context` (the settings and
context every case shares, a contender's training step), one module per case:
`finetune` (1), `pretrain` (2, and 5 on CUDA), `data_memory` (3), `generation`
(4); `results` (what a run measured), `targets` (PASS/MISS against issue #9's
targets), `report` (the markdown), `timing` (timers, medians, the matmul rate,
FLOP counts), `inputs` (vocab, reviews, kowiki slices, token stores), `hf`
(same-shape Hugging Face models), `classic` (the classic pad-to-longest
baseline), `loader_probe` (the pretraining loader in its own process, for its
memory), `wait4` (a command's wall time and peak RSS).
"""
