"""The shape of the code README.md's "Read the code" promises: common/ holds mechanics and names no model,
no import cycle, each script declares its own flags and loop."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from common.cli import REPO_ROOT

PACKAGES = ("common", "gpt", "bert", "spanbert")
MODELS = ("gpt", "bert", "spanbert")


def imports(path: Path, module_level_only: bool) -> set[str]:
    """The project modules `path` imports (at module level only, or anywhere in it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
    return found


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(REPO_ROOT).with_suffix("").parts): p
            for package in PACKAGES for p in sorted((REPO_ROOT / package).glob("*.py"))}


def test_common_names_no_model_and_stays_small() -> None:
    files = sorted((REPO_ROOT / "common").glob("*.py"))
    assert len(files) <= 24, [f.name for f in files]
    for path in files:
        named = {m for m in imports(path, module_level_only=False) if m.split(".")[0] in MODELS}
        assert not named, f"{path.name} imports {named}: what is special to a model lives in its folder"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the import graph (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    return next((c for name in sorted(graph) if name not in state and (c := visit(name, []))), None)


def test_no_import_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check finds one
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = {name: {m for m in imports(path, module_level_only=True) if m in modules()}
             for name, path in modules().items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_each_script_declares_its_flags_main_and_loop() -> None:
    for model in MODELS:
        for script in ("pretrain.py", "train.py"):
            text = (REPO_ROOT / model / script).read_text(encoding="utf-8")
            assert "def parse_args(" in text and "def main(" in text, f"{model}/{script}"
            assert re.search(r"for epoch in trainer\.epochs\(\):\n\s+for batch in trainer\.batches\(", text), \
                f"{model}/{script}: the loop is not in the script"
            assert "trainer.step(" in text
    assert re.search(r'add_argument\("--lm"', (REPO_ROOT / "gpt" / "train.py").read_text(encoding="utf-8"))
    assert re.search(r'add_argument\("--logit"', (REPO_ROOT / "spanbert" / "train.py").read_text(encoding="utf-8"))
