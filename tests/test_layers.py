"""The tree reads as the pipeline: imports run one way, and only the named layers touch shap, bertviz, adapters.

The rules are those of docs/architecture.md; every import statement of the package (function-level and
type-checking ones included) is read with ``ast`` and checked, so a new upward import fails here with its file
and line, and modules that import each other (a circle, also inside one layer) fail with the circle named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "attn_plugins"
ADAPTERS = ROOT / "adapters"

# Layer ranks: a module may import its own layer and lower ranks, never a higher one.
RANKS = {
    "errors": 0,
    "results": 0,
    "files": 0,
    "plugins": 1,
    "record": 2,
    "adapters": 3,
    "capture": 4,
    "zoo": 4.5,
    "methods": 5,
    "metrics": 6,
    "views": 7,
    "explain": 8,
    "corpus": 9,
    "bench": 10,
    "cli": 11,
    "__main__": 12,
    "__init__": 12,  # the package's lazy public names point anywhere
}
# Third-party libraries that only some layers may import.
ONLY = {"shap": {"explain", "bench"}, "bertviz": {"views"}}
# What the built-in adapters may import from the core: the adapter contract and what it is made of.
ADAPTER_CONTRACT = {"attn_plugins.adapters", "attn_plugins.record", "attn_plugins.errors", "attn_plugins.plugins"}


def layer_of(module: str) -> str:
    """The layer of a module name inside attn_plugins (``attn_plugins.capture.forward`` -> ``capture``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path, package: str) -> list[tuple[int, str]]:
    """Every (line, absolute module name) a file imports, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = package.split(".")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own[: len(own) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                # `from . import x` imports the submodule x
                out += [(node.lineno, f"{name}.{a.name}" if not node.module else name) for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def test_core_imports_run_one_way() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        package = ".".join(["attn_plugins", *rel[:-1]])
        me = rel[0] if len(rel) > 1 else rel[0]
        for line, target in imports(path, package):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target.startswith("attn_adapters"):
                problems.append(f"{where}: the core imports the built-in adapter {target}")
            top = target.split(".")[0]
            if top in ONLY and me not in ONLY[top]:
                problems.append(f"{where}: only {sorted(ONLY[top])} may import {top}")
            if target.startswith("attn_plugins.") and me in RANKS:
                other = layer_of(target)
                if other not in RANKS and not (PACKAGE / other).exists():
                    other = "errors"  # `from . import __version__`: a name of the package itself
                if RANKS.get(other, 99) > RANKS[me]:
                    problems.append(f"{where}: {me} imports {target}, a later layer ({other})")
    assert not problems, "\n".join(problems)


def module_graph(root: Path, top: str = "attn_plugins") -> dict[str, set[str]]:
    """Module -> the modules of the same package tree it imports (a package is its ``__init__``)."""

    def name(path: Path) -> str:
        rel = path.relative_to(root.parent).with_suffix("").parts
        return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)

    files = {name(p): p for p in root.rglob("*.py")}

    def resolve(target: str) -> str | None:
        while target and target not in files:  # `from .x import name`: the module x, not the name
            target = target.rpartition(".")[0]
        return target or None

    graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = {resolve(t) for _, t in imports(path, package) if t == top or t.startswith(top + ".")}
        graph[module] = found - {None, module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that reach each other through imports (strongly connected, more than one module)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for start in sorted(graph):
        if start in order:
            continue
        work = [(start, iter(sorted(graph[start])))]
        order[start] = low[start] = len(order)
        stack.append(start)
        while work:  # Tarjan's algorithm without recursion
            node, edges = work[-1]
            nxt = next((w for w in edges if w not in order or w in stack), None)
            if nxt is not None and nxt not in order:
                order[nxt] = low[nxt] = len(order)
                stack.append(nxt)
                work.append((nxt, iter(sorted(graph.get(nxt, ())))))
            elif nxt is not None:
                low[node] = min(low[node], order[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == order[node]:
                    group = []
                    while not group or group[-1] != node:
                        group.append(stack.pop())
                    if len(group) > 1:
                        found.append(sorted(group))
    return sorted(found)


# Circles another change of issue 22 cuts (record/record <-> record/selection, the latter through a
# type-checking import); an entry that no longer is a circle fails below, so the list only shrinks.
KNOWN_CIRCLES: list[list[str]] = [["attn_plugins.record.record", "attn_plugins.record.selection"]]


def test_no_module_imports_one_that_imports_it_back() -> None:
    found = circles(module_graph(PACKAGE))
    new = [" <-> ".join(group) for group in found if group not in KNOWN_CIRCLES]
    assert not new, "import circles (move the shared piece to a module both can import):\n" + "\n".join(new)
    stale = [group for group in KNOWN_CIRCLES if group not in found]
    assert not stale, f"no longer circles, remove them from KNOWN_CIRCLES: {stale}"


def test_the_circle_rule_catches_a_function_level_import_back(tmp_path: Path) -> None:
    pkg = tmp_path / "attn_plugins" / "corpus"
    pkg.mkdir(parents=True)
    (tmp_path / "attn_plugins" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .run import run\n")
    (pkg / "worker.py").write_text("X = 1\n")
    (pkg / "run.py").write_text("from .worker import X\n\ndef run():\n    from .ray import engine\n")
    (pkg / "ray.py").write_text("from .run import run\nfrom . import worker\n")
    graph = module_graph(tmp_path / "attn_plugins")
    assert graph["attn_plugins.corpus.ray"] == {"attn_plugins.corpus.run", "attn_plugins.corpus.worker"}
    assert circles(graph) == [["attn_plugins.corpus.ray", "attn_plugins.corpus.run"]]
    (pkg / "ray.py").write_text("from .worker import X\n")  # the shared piece moved down: no circle
    assert circles(module_graph(tmp_path / "attn_plugins")) == []


def test_built_in_adapters_depend_only_on_the_contract() -> None:
    problems = []
    for path in sorted(ADAPTERS.rglob("*.py")):
        for line, target in imports(path, "attn_adapters"):
            if target.startswith("attn_plugins") and not any(
                target == allowed or target.startswith(allowed + ".") for allowed in ADAPTER_CONTRACT
            ):
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports {target}, not the adapter contract")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("layer", sorted(set(RANKS) - {"__init__", "__main__"}))
def test_every_layer_named_here_exists(layer: str) -> None:
    assert (PACKAGE / layer).is_dir() or (PACKAGE / f"{layer}.py").is_file()


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from ..explain import explain\nimport shap\n")
    found = imports(bad, "attn_plugins.record")
    assert found == [(1, "attn_plugins.explain"), (2, "shap")]
    assert RANKS[layer_of(found[0][1])] > RANKS["record"]


def test_every_result_object_follows_the_result_contract() -> None:
    """Result classes print as tables and convert to dicts and DataFrames (see attn_plugins/results.py)."""
    import numpy as np
    import torch

    import attn_plugins as ap
    from attn_plugins.metrics import diagnose, disagreement
    from attn_plugins.metrics.faithfulness import AOPC, Curve
    from attn_plugins.views import head_summary

    att = torch.softmax(torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(0)), -1)
    rec = ap.AttentionRecord(tokens=["[CLS]", "a", "[SEP]"], attentions={"self": att}, special_tokens_mask=[1, 0, 1])
    results = [
        ap.plugins(),
        diagnose(rec),
        disagreement([0.1, 0.5, 0.2], [0.2, 0.6, 0.1]),
        head_summary(rec),
        AOPC(0.5, (0.1, 0.2), (0.4, 0.6), 0.9),
        Curve(np.array([0.0, 1.0]), np.array([0.9, 0.1]), 0.5),
    ]
    for result in results:
        data = result.to_dict()
        assert isinstance(data, dict) and data, type(result)
        frame = result.to_frame()
        assert len(frame) == len(result.rows()) > 0, type(result)
        assert str(result).strip(), type(result)
        result.to_json()  # strict JSON: no NaN
