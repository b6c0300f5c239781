"""The markdown report (bench/README.md): machine, versions, targets with PASS/MISS, one section per case."""
from __future__ import annotations

from bench.inputs import SCALES
from bench.pretrain import PretrainResult
from bench.results import MB, Results
from bench.targets import targets
from bench.timing import Measurement


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def fmt_ratio(a: Measurement, b: Measurement) -> str:
    return f"{a.rate / b.rate:.2f}x"


def fmt_peak(m: Measurement, peak: float) -> tuple[str, str]:
    g = m.gflops
    return ("-", "-") if g is None else (f"{g:.1f}", f"{100 * g / peak:.0f}%")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


# --- sections ------------------------------------------------------------------------------

def header(r: Results) -> list[str]:
    s = r.settings
    lines = [
        "# Benchmarks",
        "",
        "Speed and memory of this project's models against the reference implementations",
        "(Hugging Face `transformers`, and the classic way such scripts were written), measured",
        "in one run on the machine below. **This file is written by the benchmark**; regenerate it with",
        "",
        "```bash",
        "pip install -r requirements-bench.txt   # transformers, the baselines",
        "python -m bench.run                     # about 12 minutes on 2 CPU cores; writes bench/README.md",
        "```",
        "",
        "It reads `vocab/kowiki.model`, `data/ratings_train.json` (or `$CORPUS_DIR/nsmc`) and",
        "`data/kowiki.json` (or `$CORPUS_DIR/kowiki`). `python -m bench.run --quick --report /tmp/bench.md`",
        "runs every case on the shipped sample in about a minute (CI runs it in `tests/test_bench.py`:",
        "it proves the benchmark works and asserts nothing on speed). `--profile gpt` prints",
        "torch.profiler's top ops of a pretraining step; `--help` lists the options.",
        "",
        "Reading notes:",
        f"- Every rate is the median of {s.reps} repetitions; the repetitions of a contender and of its",
        "  baselines are interleaved (A B A B ...), so background load hits them alike. The machine is",
        "  shared and noisy: compare ratios within one run, not absolute numbers across runs.",
        "- Real tokens are the non-[PAD] tokens; padded positions are computed too, and count in GFLOP/s.",
        "- GFLOP/s counts the matmul FLOPs an implementation executes (training = 3 x forward:",
        "  `common.layers.flops_per_token` for the layers, plus the heads over the rows they score).",
        "  Hugging Face's MLM heads score every position, ours only the masked ones, so per real token",
        "  they execute more FLOPs. % of matmul rate = GFLOP/s / the measured matmul rate below.",
        "- Fine-tuning and pretraining steps are forward + backward + gradient clipping + AdamW",
        "  (`common.trainer.make_optimizer`), the same settings on both sides, dropout on, after warm-up steps.",
    ]
    if r.quick:
        lines += ["", "> **Quick mode** (`--quick`): the sample corpus, small batches, few repetitions. The numbers",
                  "> show that every case runs; they say nothing about speed, and the targets are not meaningful here."]
    return lines


def machine_section(r: Results) -> list[str]:
    rows = [[k, v] for k, v in r.machine.items()]
    rows.append([r.peak_label, f"{r.peak_gflops:,.1f} GFLOP/s"])
    rows.append(["command", f"`{r.command}`"])
    rows.append(["run time", f"{r.minutes:.1f} min"])
    return ["## Machine", ""] + table(["", ""], rows)


def targets_section(r: Results) -> list[str]:
    ts = targets(r)
    lines = ["## Targets", "", "Targets for this 2-core CPU (issue #9). Nothing is asserted; a MISS is reported as such."
             " The sections below give the measurements behind each line.", ""]
    if not ts:
        return lines + ["No case that has a target ran."]
    rows = [[t.case, t.what, t.target, t.measured, "PASS" if t.passed else "**MISS**"] for t in ts]
    misses = sum(not t.passed for t in ts)
    return lines + table(["case", "what", "target", "measured", "result"], rows) + [
        "", f"{len(ts) - misses} of {len(ts)} targets met." + (" See the sections below for what the misses are made of."
                                                              if misses else "")]


def not_run(r: Results, case: str) -> list[str] | None:
    if case in r.errors:
        return [f"**Failed:** `{r.errors[case]}`"]
    if case not in r.selected:
        return [f"Not run (`--cases` left out {case})."]
    return None


def finetune_section(r: Results) -> list[str]:
    s, peak = r.settings, r.peak_gflops
    lines = ["## 1. Fine-tuning on NSMC reviews", "",
             f"Forward + backward + AdamW step of the classifier (`train.py`'s model, config_half.json) on real NSMC"
             f" reviews, batches of {s.finetune_batch}. Rates are real (non-pad) tokens per second, collating included."]
    if (missing := not_run(r, "1")) is not None:
        return lines + [""] + missing
    lines += ["", "### 1a. Model against model, identical batches", "",
              f"The first {s.finetune_batches} batches of our pipeline (length-bucketed, `common.trainer."
              "length_bucketed_batches`) fed as the same tensors to our classifier and to the Hugging Face classifier"
              " of the same shape, loaded with the same weights (the logit difference is measured in eval mode on the"
              " first batch). SpanBERT's classifier is a BERT encoder: its baseline is BertForSequenceClassification.",
              ""]
    rows = []
    for f in r.finetune:
        for m, attn, diff, ratio in ((f.ours, "SDPA", "", fmt_ratio(f.ours, f.hf)),
                                     (f.hf, f.attn, f"{f.logit_difference:.1e}", "1.00x")):
            g, frac = fmt_peak(m, peak)
            rows.append([f.model, m.name, attn, fmt_rate(m.rate), ratio, g, frac, diff])
    lines += table(["model", "implementation", "attention", "real tokens/s", "vs HF", "GFLOP/s", "% of matmul rate",
                    "max logit difference"], rows)
    lines += ["", "### 1b. Pipeline against pipeline", "",
              "Ours: `train.py`'s batching (length-bucketed) and model. Classic (`bench/classic.py`, written here):"
              " random batches padded to the longest review, attention written out with a -1e9 mask, and for GPT the"
              " full LM projection (logits over the vocab at every position) computed at every step though the LM loss"
              " is off. The middle row, our model on the classic batches, splits the gain between batching and model."
              " The classic GPT's GFLOP/s counts its LM-projection forward.", ""]
    rows = []
    for f in r.finetune:
        for m, batches in ((f.ours, "length-bucketed"), (f.ours_random, "random, pad to longest"),
                           (f.classic, "random, pad to longest")):
            g, frac = fmt_peak(m, peak)
            rows.append([f.model, m.name, batches, f"{m.info['batches']}", f"{100 * m.info['real_share']:.0f}%",
                         fmt_rate(m.rate), fmt_ratio(m, f.classic), g, frac])
    return lines + table(["model", "pipeline", "batches", "batches/rep", "real share of padded tokens",
                          "real tokens/s", "vs classic", "GFLOP/s", "% of matmul rate"], rows)


def pretrain_table(results: list[PretrainResult], peak: float, mfu: bool = False) -> list[str]:
    rows = []
    for p in results:
        contenders = [(p.ours, "SDPA"), (p.full_logits, "SDPA"), (p.hf, p.attn)]
        for m, attn in [(m, attn) for m, attn in contenders if m is not None]:
            g, frac = fmt_peak(m, peak)
            rows.append([p.model, m.name, attn, fmt_rate(m.rate), fmt_ratio(m, p.hf),
                         fmt_ratio(p.ours, m) if m is p.full_logits else "-", g, frac,
                         f"{p.collate_ms:.0f}" if m is p.ours else "-"])
    return table(["model", "implementation", "attention", "tokens/s", "vs HF", "chunked loss vs this", "GFLOP/s",
                  "MFU" if mfu else "% of matmul rate", "collate ms/batch"], rows)


def pretrain_section(r: Results) -> list[str]:
    s = r.settings
    lines = ["## 2. Pretraining step", "",
             f"One optimizer step on {s.pretrain_batch} x {s.pretrain_len}-token batches (config_half.json), drawn as"
             " each `pretrain.py` draws them from its token store (case 3's stores): GPT windows; BERT sentence pairs"
             " with whole-word masks and NSP labels; SpanBERT segments with span masks. Tokens/s counts real tokens."
             f" Baselines: OpenAIGPTLMHeadModel with labels = inputs (it shifts them inside: {s.pretrain_len - 1} targets"
             f" per {s.pretrain_len}-token window, ours {s.pretrain_len});"
             " BertForPreTraining with MLM labels + next_sentence_label; for SpanBERT, BertForMaskedLM, the nearest"
             " Hugging Face head (no SBO head exists there, so it does less head work than ours but scores every"
             " position). Collating is timed apart (the last column) and not in the step. The middle row is our"
             " model with the vocab heads' loss as it was before `common.losses.linear_cross_entropy`: the logits of"
             " the scored rows (the masked positions for BERT and SpanBERT, every position for GPT) made in full,"
             " then F.cross_entropy (`bench.pretrain.full_logits_loss`); \"chunked loss vs this\" is our step's"
             " speed over it. Its GFLOP/s counts the same FLOPs as ours."]
    if (missing := not_run(r, "2")) is not None:
        return lines + [""] + missing
    return lines + [""] + pretrain_table(r.pretrain, r.peak_gflops)


def data_section(r: Results) -> list[str]:
    s = r.settings
    lines = ["## 3. data.py throughput and the loader's memory", "",
             f"Each model's `data.py` run as a subprocess (`--n_seq {s.pretrain_len} --workers {s.workers}`) on a fixed"
             f" slice of kowiki.json and on one {SCALES[-1]} times as large. MB/s counts input text, start-up included."
             " Peak RSS is wait4's ru_maxrss (`bench/wait4.py`): the largest single process (the main one or a"
             " tokenizer worker).",
             "",
             f"The loader: `bench/loader_probe.py` opens each store with `common.token_store.TokenStore`, wraps it"
             f" in the model's pretraining dataset and collates {s.loader_batches} random batches of"
             f" {s.pretrain_batch}. Its peak RSS includes the memory-mapped store pages it touched (page cache,"
             " shared and reclaimable); the anonymous RSS is what the process itself allocated, and is what must stay"
             " flat as the corpus grows (a loader that read the store into memory would add the store's size)."]
    if (missing := not_run(r, "3")) is not None:
        return lines + [""] + missing
    rows = []
    for d in r.data:
        for scale in SCALES:
            run, probe = d.runs[scale], d.loader[scale]
            rows.append([d.model, f"{scale}x", f"{run.input_bytes / MB:.1f}", f"{run.seconds:.1f}",
                         f"{run.input_bytes / MB / run.seconds:.2f}", f"{run.peak_rss / MB:.0f}",
                         f"{run.store_bytes / MB:.1f}", f"{probe['peak_rss'] / MB:.0f}",
                         f"{probe['peak_anon_rss'] / MB:.0f}"])
    return lines + [""] + table(["model", "corpus", "input MB", "data.py s", "MB/s", "data.py peak RSS MB",
                                 "store MB", "loader peak RSS MB", "loader peak anonymous RSS MB"], rows)


def generation_section(r: Results) -> list[str]:
    lines = ["## 4. Generation", ""]
    if (missing := not_run(r, "4")) is not None:
        return lines + missing
    g = r.generation
    assert g is not None
    lengths = "; ".join(f"batch {run.batch}: {', '.join(map(str, run.prompt_tokens))}" for run in g.runs)
    lines += [f"{g.new_tokens} new tokens sampled per row (top_k 40) after Korean prompts (tokens, [BOS] included:"
              f" {lengths}; left-padded) by a GPT of config_half.json's shape with n_seq {g.n_seq} (room for prompt +"
              " new tokens), random weights. Ours: `gpt.generate.generate_batch` with its static KV cache, eager and"
              " with `compile=True` (`--compile`: the decode step as one torch.compiled graph), and with"
              " `use_cache=False` (every row's whole prefix recomputed at every step; batch 1 only: it runs each row"
              " alone, so batch 8 would take 8 times as long). Hugging Face:"
              " `GPT2LMHeadModel.generate(do_sample=True, top_k=40)` with its cache and the attention mask,"
              f" same layers, widths, vocab and positions ({g.hf_attn} attention). Tokens/s counts the new tokens"
              " of all rows; ms/step is one decode step of the whole batch.", ""]
    rows = []
    for run in g.runs:
        for m in (run.ours_cache, run.ours_compiled, run.hf_cache, run.ours_recompute):
            if m is not None:
                rows.append([str(run.batch), m.name, fmt_rate(m.rate), f"{1000 * run.batch / m.rate:.2f}",
                             fmt_ratio(m, run.hf_cache)])
    compile_times = ", ".join(f"{run.compile_seconds:.0f} s at batch {run.batch}" for run in g.runs)
    return lines + table(["batch", "contender", "new tokens/s", "ms/step", "vs HF generate"], rows) + [
        "", f"`--compile`'s first call at each shape (compiling, or loading inductor's cache, + one generation,"
            f" untimed above): {compile_times}."]


def gpu_section(r: Results) -> list[str]:
    lines = ["## 5. CUDA", ""]
    if "5" in r.errors:
        return lines + [f"**Failed:** `{r.errors['5']}`"]
    if r.gpu is None:
        return lines + ["Not run: this was a CPU run. With `--gpu N`, cases 1, 2 and 4 run on that GPU under bf16"
                        " autocast (as training does there; % of matmul rate is then against the measured bf16 rate),"
                        " and this section gives a pretraining step of the full-size config.json models with its"
                        " MFU (FLOPs executed / the measured bf16 matmul rate) against the same Hugging Face heads."]
    return lines + [f"Pretraining step of the config.json models, bf16 autocast, {r.settings.pretrain_batch} x"
                    f" {r.settings.pretrain_len} tokens; MFU against the measured bf16 matmul rate"
                    f" ({r.gpu.bf16_peak_gflops:,.0f} GFLOP/s).", ""] + pretrain_table(r.gpu.pretrain,
                                                                                      r.gpu.bf16_peak_gflops, mfu=True)


def loop_section(r: Results) -> list[str]:
    s = r.settings
    lines = ["## 6. The training loop", "",
             f"The loop of every `pretrain.py` (common/trainer.py: `epochs`, `batches`, `step`) on {s.pretrain_batch}"
             f" x {s.pretrain_len}-token batches of each model's store (case 3's), {s.loop_steps} optimizer steps from"
             " a fresh config_half.json model. \"Collate\" is where a batch is made: in the step (`--prefetch 0`, the"
             " loop before the background thread) or by a thread two batches ahead (`--prefetch 2`, the default)."
             " Waiting: the share of the loop's time spent waiting for a batch when the dataset's collate is slowed"
             " on purpose by a sleep as long as one step (collating as costly as computing); the first batch has"
             " nothing to overlap with, so the share is also given after it. Tokens/s: the loop without the sleep"
             " (median of the interleaved repetitions). Graphs: `torch._dynamo.explain` of the pretraining forward and"
             " loss, what `--compile` traces (one graph and no break: no host sync, no recompile from the data)."]
    if (missing := not_run(r, "6")) is not None:
        return lines + [""] + missing
    rows = []
    for lp in r.loop:
        for p in (0, 2):
            whole, after = lp.wait_share[p]
            rows.append([lp.model, str(p), f"{lp.step_ms:.0f}", f"{100 * whole:.1f}%", f"{100 * after:.1f}%",
                         fmt_rate(lp.tokens_per_s[p]), f"{lp.graphs} ({lp.graph_breaks})" if p == 2 else ""])
    return lines + [""] + table(["model", "--prefetch", "step ms", "waiting, slowed collate",
                                 "waiting after the first batch", "tokens/s (no sleep)", "graphs (breaks)"], rows)


def render(r: Results) -> str:
    parts = [header(r), machine_section(r), targets_section(r), finetune_section(r), pretrain_section(r),
             data_section(r), generation_section(r), gpu_section(r), loop_section(r)]
    return "\n\n".join("\n".join(p) for p in parts) + "\n"
