"""The performance benchmarks run in quick mode and print well-formed JSON (no timing or memory asserts here)."""

from __future__ import annotations

import json

import pytest

from attn_plugins.bench import capture as bench_capture
from attn_plugins.bench import cost as bench_cost
from attn_plugins.bench import memory as bench_memory


def _printed(main, capsys: pytest.CaptureFixture) -> dict:
    main(["--quick"])
    return json.loads(capsys.readouterr().out)


def test_capture_overhead_quick(capsys: pytest.CaptureFixture) -> None:
    out = _printed(bench_capture.main, capsys)
    assert out["benchmark"] == "capture_overhead" and out["quick"] is True
    assert {r["model"] for r in out["rows"]} == {"all-MiniLM-L6-v2", "tiny-llama"}
    for row in out["rows"]:
        med = row["median_s"]
        assert set(med) == {"plain", "capture", "capture_last", "eager"} and all(v > 0 for v in med.values())
        assert row["capture_vs_plain"] == pytest.approx(med["capture"] / med["plain"], rel=1e-2)
        assert row["last_vs_plain"] == pytest.approx(med["capture_last"] / med["plain"], rel=1e-2)
        assert set(row["cpu_median_s"]) == set(med)
        assert row["backend"] == "sdpa"
    assert set(out["goals"]) >= {
        "capture_le_eager_everywhere",
        "capture_le_1.10x_plain_at_128",
        "last_le_1.10x_plain_at_512",
    }


def test_memory_long_quick(capsys: pytest.CaptureFixture) -> None:
    out = _printed(bench_memory.main, capsys)
    (row,) = out["rows"]
    assert row["tokens"] == 256
    full, stream = row["details"]["full"], row["details"]["stream"]
    # What each mode keeps is exact: all layers' weights for a full capture, an N x N rollout when streaming.
    assert full["result_mb"] == pytest.approx(full["all_layers_weights_mb"], abs=0.1)
    assert stream["result_mb"] == pytest.approx(256 * 256 * 8 / 2**20, abs=0.1)
    assert row["full_over_stream"] == pytest.approx(
        row["full_peak_extra_mb"] / max(row["stream_peak_extra_mb"], 0.1), rel=1e-2
    )


def test_memory_child_reports_a_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        bench_memory.measure_one("half", 16)


def test_attention_vs_shap_quick(capsys: pytest.CaptureFixture) -> None:
    out = _printed(bench_cost.main, capsys)
    assert out["texts"] == 2 and out["shap"]["max_evals"] == 64
    assert [m["method"] for m in out["methods"]] == ["raw", "rollout"]
    for m in out["methods"]:
        assert "error" not in m, m
        # one capture, and one forward for the last hidden states that weight the pooled rows
        assert m["forward_passes_per_text"] == 2.0
        assert m["speedup_vs_shap"] > 0
        assert -1.0 <= m["spearman"] <= 1.0 and 0.0 <= m["top_3"] <= 1.0


def test_attention_vs_shap_on_the_trained_decoder_quick(capsys: pytest.CaptureFixture) -> None:
    bench_cost.main(["--quick", "--model", "decoder"])
    out = json.loads(capsys.readouterr().out)
    assert out["model_choice"] == "decoder" and "Llama" in out["model"] and out["texts"] == 2
    assert out["target"].startswith("next_token")
    # A 2-layer decoder's capture reads one forward per text; rows of a causal LM need no pooling forward.
    assert [m["forward_passes_per_text"] for m in out["methods"]] == [1.0, 1.0]


def test_attention_vs_shap_refuses_a_learned_attributor_for_another_model(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        bench_cost.main(["--model", "decoder", "--learned", "x.safetensors"])
    assert "--learned is a MiniLM attributor" in capsys.readouterr().err


def test_cost_texts_are_distinct_and_seeded() -> None:
    a, b = bench_cost.texts(100, seed=0), bench_cost.texts(100, seed=0)
    assert a == b and len(set(a)) == 100
    assert bench_cost.texts(5, seed=1) != a[:5]


def _performance_table():
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import performance_table
    finally:
        sys.path.pop(0)
    return root, performance_table


@pytest.mark.parametrize(
    ("name", "table"),
    [
        ("cli", "cli_table"),
        ("report", "report_table"),
        ("attention_vs_shap", "cost_table"),
        ("attention_vs_shap_decoder", "cost_table"),
        ("attention_vs_shap_seq2seq", "cost_table"),
    ],
)
def test_performance_doc_holds_the_tables_generated_from_the_json(name: str, table: str) -> None:
    root, performance_table = _performance_table()
    data = json.loads((root / "benchmarks" / "results" / f"{name}.json").read_text(encoding="utf-8"))
    doc = (root / "docs" / "performance.md").read_text(encoding="utf-8")
    block = "\n".join(getattr(performance_table, table)(data))
    assert block in doc, f"docs/performance.md does not hold what performance_table.{table} writes from {name}.json"


def test_readme_holds_the_cost_rows_generated_from_the_json() -> None:
    root, performance_table = _performance_table()
    data = json.loads((root / "benchmarks" / "results" / "attention_vs_shap.json").read_text(encoding="utf-8"))
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- cost-summary -->\n", 1)[1].split("<!-- /cost-summary -->", 1)[0]
    assert block == performance_table.readme_cost(data) + "\n"
    assert "| cplrp_mask |" in block and "| learned |" in block


def test_cli_benchmark_quick(capsys: pytest.CaptureFixture) -> None:
    from attn_plugins.bench import cli as bench_cli

    out = _printed(bench_cli.main, capsys)
    assert out["benchmark"] == "cli" and out["repeats"] == 2
    assert out["heavy_modules_after_build_parser"] == []
    assert [r["case"] for r in out["rows"]] == ["help", "version", "explain_help", "missing_model", "unwritable_output"]
    for row in out["rows"]:
        assert row["exit_status"] == [row["expected_status"]] and row["median_s"] > 0
        assert row["stderr_lines"] == ([1] if row["expected_status"] == 2 else [0])
