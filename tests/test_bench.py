"""The benchmark suite (bench/) in its quick mode: every case runs on the shipped sample and the
report has each section with numbers in it. Nothing is asserted on speed (the CI machine is
not the benchmark machine, and quick mode's batches are tiny)."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from common.cli import REPO_ROOT  # noqa: E402

COMMITTED_REPORT = REPO_ROOT / "bench" / "README.md"


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def table_under(text: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first markdown table after `heading`, as {column: cell}."""
    lines = text[text.index(heading):].splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x%").replace("MB", "").strip())


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory, script_env) -> str:
    folder = tmp_path_factory.mktemp("bench")
    report = folder / "bench.md"
    before = digest(COMMITTED_REPORT)
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--threads", "1", "--workers", "1",
         "--report", str(report), "--workdir", str(folder / "work")],
        cwd=REPO_ROOT, env=script_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert digest(COMMITTED_REPORT) == before, "quick mode must not touch bench/README.md"
    return report.read_text(encoding="utf-8")


def test_report_has_every_section(quick_report: str) -> None:
    for heading in ("## Machine", "## Targets", "## 1. Fine-tuning", "### 1a.", "### 1b.", "## 2. Pretraining step",
                    "## 3. data.py", "## 4. Generation", "## 5. CUDA"):
        assert heading in quick_report, heading
    assert "Failed" not in quick_report
    assert "Quick mode" in quick_report
    machine = quick_report[quick_report.index("## Machine"):quick_report.index("## Targets")]
    for needed in ("| CPU |", "| torch threads | 1 |", "python 3.", "torch 2.", "transformers 5.", "numpy ",
                   "fp32 matmul rate"):
        assert needed in machine, needed


def test_report_has_numbers_for_every_case(quick_report: str) -> None:
    models = {"gpt", "bert", "spanbert"}
    for heading, column, rows_per_model in (("### 1a.", "real tokens/s", 2), ("### 1b.", "real tokens/s", 3),
                                            ("## 2. Pretraining step", "tokens/s", 3),
                                            ("## 3. data.py", "MB/s", 2)):
        rows = table_under(quick_report, heading)
        assert {r["model"] for r in rows} == models, heading
        assert len(rows) == rows_per_model * len(models), heading
        assert all(number(r[column]) > 0 for r in rows), (heading, rows)
    full = [r for r in table_under(quick_report, "## 2. Pretraining step") if r["implementation"] == "ours, full-logit loss"]
    assert len(full) == len(models) and all(number(r["chunked loss vs this"]) > 0 for r in full)
    for r in table_under(quick_report, "## 3. data.py"):
        assert number(r["data.py peak RSS MB"]) > 0 and number(r["loader peak anonymous RSS MB"]) > 0
    generation = table_under(quick_report, "## 4. Generation")
    assert all(number(r["new tokens/s"]) > 0 for r in generation)
    contenders = {(r["batch"], r["contender"]) for r in generation}
    for batch in ("1", "8"):  # eager and compiled cache against Hugging Face at both batch sizes
        for name in ("ours, KV cache", "ours, KV cache, --compile", "HF GPT2LMHeadModel.generate, cache"):
            assert (batch, name) in contenders, (batch, name)
    assert ("1", "ours, recompute (no cache)") in contenders and len(generation) == 7

    targets = table_under(quick_report, "## Targets")
    assert {t["case"] for t in targets} == {"1a", "1b", "2", "3", "4", "6"}
    loop = table_under(quick_report, "## 6. The training loop")
    assert {(r["model"], r["--prefetch"]) for r in loop} == {(m, p) for m in models for p in ("0", "2")}
    assert all(number(r["tokens/s (no sleep)"]) > 0 for r in loop)
    # every model's compiled pretraining step is one graph without a break (measured, so asserted)
    assert {r["graphs (breaks)"] for r in loop if r["--prefetch"] == "2"} == {"1 (0)"}
    for t in targets:
        assert t["result"] in ("PASS", "**MISS**"), t
        number(t["measured"].split()[0])  # a number, e.g. "1.23x", "55%", "+0.1 MB"


def test_full_logits_baseline_computes_the_chunked_loss() -> None:
    """Case 2's "before" contender differs from ours in how the loss is computed, not in what it is:
    the same loss, accuracy and gradients on a BERT MLM batch and on SpanBERT's SBO head."""
    import dataclasses

    import torch

    from bench.pretrain import with_full_logits_loss
    from common.config import load_config
    from spanbert.model import SpanBertForPreTraining

    cfg = dataclasses.replace(load_config(REPO_ROOT / "spanbert" / "config_half.json").with_vocab(97), n_layer=1)
    torch.manual_seed(0)
    chunked = SpanBertForPreTraining(cfg)
    full = with_full_logits_loss(SpanBertForPreTraining(cfg))
    full.load_state_dict(chunked.state_dict())
    from common.layers import LMHead
    heads = [m for m in full.modules() if isinstance(m, LMHead)]
    assert len(heads) == 2 and all("loss" in vars(m) for m in heads)  # both heads take the full-logit path
    B, T, M = 2, 12, 3
    batch = {"input_ids": torch.randint(5, 97, (B, T)), "attention_mask": torch.ones(B, T, dtype=torch.long),
             "mlm_positions": torch.tensor([[2, 3, 4], [7, 8, 0]]),
             "mlm_labels": torch.tensor([[10, 11, 12], [13, 14, 0]]),
             "span_left": torch.tensor([[1, 1, 1], [6, 6, 0]]), "span_right": torch.tensor([[5, 5, 5], [9, 9, 0]]),
             "span_offset": torch.tensor([[0, 1, 2], [0, 1, 0]])}
    outputs = []
    for model in (chunked, full):
        model.eval()
        loss, metrics = model(**batch)[:2]
        loss.backward()
        outputs.append((loss, metrics, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, metrics_a, grads_a), (loss_b, metrics_b, grads_b) = outputs
    torch.testing.assert_close(loss_a, loss_b)
    assert set(metrics_a) == set(metrics_b) and {"mlm_loss", "sbo_loss"} <= set(metrics_a)
    for name in metrics_a:
        torch.testing.assert_close(torch.as_tensor(metrics_a[name][0]).float(), torch.as_tensor(metrics_b[name][0]).float())
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6)
