"""The corpus-scale benchmark: its JSON in benchmarks/results/ has local, Ray 1 and Ray 2 worker rows, and
the table in docs/scale.md is the one benchmarks/scale_table.py writes from it (no figure typed by hand)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "benchmarks" / "results" / "scale.json"


def _table_module():
    spec = importlib.util.spec_from_file_location("scale_table", ROOT / "benchmarks" / "scale_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measured_configurations() -> None:
    data = json.loads(RESULT.read_text(encoding="utf-8"))
    assert data["benchmark"] == "corpus_scale" and data["quick"] is False
    configs = [(r["engine"], r["workers"]) for r in data["rows"]]
    assert configs == [("local", 1), ("ray", 1), ("ray", 2)]
    by = {(r["engine"], r["workers"]): r for r in data["rows"]}
    for row in data["rows"]:
        assert row["texts"] >= 200 and row["explaining_seconds"] <= row["wall_seconds"]
    ratio = by[("ray", 2)]["explaining_examples_per_second"] / by[("ray", 1)]["explaining_examples_per_second"]
    assert abs(ratio - data["ray_2_over_1_explaining"]) < 0.01


def test_docs_table_is_the_generated_one(tmp_path: Path) -> None:
    module = _table_module()
    data = json.loads(RESULT.read_text(encoding="utf-8"))
    doc = (ROOT / "docs" / "scale.md").read_text(encoding="utf-8")
    copy = tmp_path / "scale.md"
    copy.write_text(doc, encoding="utf-8")
    module.write(data, copy)
    assert copy.read_text(encoding="utf-8") == doc, "docs/scale.md: run benchmarks/scale_table.py"
    assert "\n".join(module.table(data)) in doc
