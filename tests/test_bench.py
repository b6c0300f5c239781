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

from common.paths import REPO_ROOT  # noqa: E402

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
                                            ("## 2. Pretraining step", "tokens/s", 2),
                                            ("## 3. data.py", "MB/s", 2)):
        rows = table_under(quick_report, heading)
        assert {r["model"] for r in rows} == models, heading
        assert len(rows) == rows_per_model * len(models), heading
        assert all(number(r[column]) > 0 for r in rows), (heading, rows)
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
    assert {t["case"] for t in targets} == {"1a", "1b", "2", "3", "4"}
    for t in targets:
        assert t["result"] in ("PASS", "**MISS**"), t
        number(t["measured"].split()[0])  # a number, e.g. "1.23x", "55%", "+0.1 MB"
