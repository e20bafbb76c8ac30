"""Write docs/performance.md from the JSON of the capture, memory, attention-vs-shap, CLI and report benchmarks.

Run the three benchmarks, keep their JSON, then:
    python benchmarks/capture_overhead.py > capture.json
    python benchmarks/memory_long.py > memory.json
    python benchmarks/attention_vs_shap.py > cost.json   (also --model decoder / --model seq2seq, one file each)
    attn-plugins bench cli > benchmarks/results/cli.json
    attn-plugins bench report > benchmarks/results/report.json
    python benchmarks/performance_table.py --capture capture.json --memory memory.json --cost cost.json [decoder.json seq2seq.json] \
        --cli benchmarks/results/cli.json --report benchmarks/results/report.json --notes benchmarks/performance_notes.md
Nothing in the tables is typed by hand; the notes (analysis of the figures) are appended as written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any


def capture_table(data: dict[str, Any]) -> list[str]:
    """Markdown rows of the capture-overhead benchmark."""
    lines = [
        "| model | tokens | batch | plain (s) | ap.capture (s) | eager (s) | capture / plain | eager / plain "
        "| capture / eager | last layer / plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        m = r["median_s"]
        lines.append(
            f"| {r['model']} ({r['backend']}) | {r['tokens']} | {r['batch']} | {m['plain']:.4f} | {m['capture']:.4f} "
            f"| {m['eager']:.4f} | {r['capture_vs_plain']:.2f} | {r['eager_vs_plain']:.2f} | {r['capture_vs_eager']:.2f} "
            f"| {r['last_vs_plain']:.2f} |"
        )
    g = data["goals"]

    def met(flag: bool | None) -> str:
        return "met" if flag else "not met"

    lines += [
        "",
        f"Goal capture <= eager at every length: **{met(g['capture_le_eager_everywhere'])}** (worst "
        f"{g['capture_vs_eager_max']}x). Goal capture <= 1.10x plain at 128 tokens: "
        f"**{met(g['capture_le_1.10x_plain_at_128'])}** (worst {g['capture_vs_plain_at_128_max']}x). Goal last-layer "
        f"capture <= 1.10x plain at 512 tokens: **{met(g['last_le_1.10x_plain_at_512'])}** (worst "
        f"{g['last_vs_plain_at_512_max']}x). Ratios of wall-time medians; process-CPU ratios are in the JSON "
        "(`cpu_*`).",
    ]
    return lines


def memory_table(data: dict[str, Any]) -> list[str]:
    """Markdown rows of the long-input memory benchmark."""
    lines = [
        "| tokens | plain forward (MB) | full capture (MB) | streaming reducers (MB) | full / stream | one layer of weights (MB) | all layers (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['tokens']} | {r.get('plain_peak_extra_mb', 'n/a')} | {r['full_peak_extra_mb']} | "
            f"{r['stream_peak_extra_mb']} | {r['full_over_stream']} | {r['one_layer_weights_mb']} | {r['all_layers_weights_mb']} |"
        )
    lines += ["", f"Model: {data['model']}. Measure: {data['measure']}."]
    return lines


COST_MODELS = {"minilm": "MiniLM", "decoder": "The trained decoder", "seq2seq": "The trained encoder-decoder"}


def cost_table(data: dict[str, Any]) -> list[str]:
    """Markdown rows of the attention-vs-shap benchmark."""
    s = data["shap"]
    lines = [
        "| explainer | s / text | forward passes / text | speed-up vs shap | Spearman | Kendall | top-3 overlap |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| shap {s['explainer']} (max_evals={s['max_evals']}) | {s['seconds_per_text']:.4f} | "
        f"{s['forward_passes_per_text']:.1f} | 1 | | | |",
    ]
    for m in data["methods"]:
        if "error" in m:
            lines.append(f"| {m['method']} | error: {m['error']} | | | | | |")
            continue

        def f(x: Any) -> str:
            return "n/a" if x is None else f"{x:+.3f}"

        lines.append(
            f"| {m['method']} | {m['seconds_per_text']:.4f} | {m['forward_passes_per_text']:.1f} | "
            f"{m['speedup_vs_shap']}x | {f(m['spearman'])} | {f(m['kendall'])} | {m['top_3']:.2f} |"
        )
    lines += ["", f"{data['model']}, target: {data['target']}; {data['texts']} texts."]
    return lines


# The rows README.md shows of the MiniLM cost table (docs/performance.md has every method and model).
README_COST_ROWS = ("raw", "rollout", "gae", "cplrp_mask", "learned")


def readme_cost(data: dict[str, Any]) -> str:
    """README's block: shap and the README rows of the MiniLM cost table."""
    short = {**data, "methods": [m for m in data["methods"] if m["method"] in README_COST_ROWS]}
    return "\n".join(cost_table(short)[:-2])


def cli_table(data: dict[str, Any]) -> list[str]:
    """Markdown rows of the command-line start-up benchmark."""
    lines = [
        "| case | command | median (s) | min (s) | exit status | stderr lines | goal (s) | met |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['case']} | `{r['command']}` | {r['median_s']:.3f} | {r['min_s']:.3f} | "
            f"{'/'.join(map(str, r['exit_status']))} | {'/'.join(map(str, r['stderr_lines']))} | {r['goal_s']} | "
            f"{'yes' if r['met'] else '**no**'} |"
        )
    heavy = ", ".join(data["heavy_modules_after_build_parser"]) or "none"
    lines += [
        "",
        f"Fresh processes, median of {data['repeats']}; a bare `python -c pass` takes "
        f"{data['python_startup_median_s']:.3f} s here. Heavy libraries imported by building the parser: {heavy}.",
    ]
    return lines


def report_table(data: dict[str, Any]) -> list[str]:
    """Markdown rows of the report benchmark."""
    parts = data["breakdown_s"]
    lines = [
        "| what | seconds |",
        "|---|---:|",
        f"| `attn-plugins explain` (fresh process, wall) | {data['cli_s']:.2f} |",
        f"| `attn-plugins explain` (fresh process, CPU) | {data['cli_cpu_s']:.2f} |",
        f"| `ap.report` (warm process, wall) | {data['report_s']:.2f} |",
        *(f"| of which `{name}` | {sec:.3f} |" for name, sec in parts.items() if name != "reference"),
        f"| of which the reference: {data['reference']}, {data['reference_evaluations']:.0f} masked inputs | "
        f"{parts['reference']:.3f} |",
    ]

    def met(flag: bool) -> str:
        return "met" if flag else "not met"

    load = " to ".join(f"{x:.1f}" for x in data["load_average"])
    lines += [
        "",
        f"{data['model']}, {data['tokens']} tokens, target: {data['target']}; median of {data['repeats']}, "
        f"{data['torch_threads']} torch thread; the page is {data['page_kb']:.0f} KB. Goal: the command within "
        f"{data['goal_s']:.0f} s: in CPU time **{met(data['cpu_met'])}**, in wall time **{met(data['met'])}** "
        f"(load average {load} on {data['cpu_count']} CPUs while it ran: wall time includes waiting for a core).",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    """Read the benchmark JSON files and write the Markdown page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", type=Path)
    parser.add_argument("--memory", type=Path)
    parser.add_argument("--cost", type=Path, nargs="+", help="one attention_vs_shap JSON per model")
    parser.add_argument("--cli", type=Path)
    parser.add_argument("--report", type=Path)
    parser.add_argument(
        "--notes",
        type=Path,
        help="a Markdown file of analysis appended as written (e.g. benchmarks/performance_notes.md)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/performance.md"))
    args = parser.parse_args(argv)
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        "# Performance",
        "",
        f"Generated on {today} by `python benchmarks/performance_table.py` from the benchmarks' JSON; "
        "CPU only, one torch thread, medians of repeats measured side by side in one process.",
        "",
    ]
    sections = [
        ("capture", "Capture overhead", "python benchmarks/capture_overhead.py", capture_table),
        ("memory", "Memory for long inputs", "python benchmarks/memory_long.py", memory_table),
        ("cost", "Attention methods versus SHAP", "python benchmarks/attention_vs_shap.py", cost_table),
        ("cli", "Command-line start-up", "attn-plugins bench cli", cli_table),
        ("report", "The default report", "attn-plugins bench report", report_table),
    ]
    for key, title, command, table in sections:
        paths = getattr(args, key)
        if paths is None:
            continue
        lines += [f"## {title}", ""]
        for path in paths if isinstance(paths, list) else [paths]:
            data = json.loads(path.read_text("utf-8"))
            if key == "cost":
                # One benchmark, one table per model: the command that gives each.
                choice = data.get("model_choice", "minilm")
                lines += [f"### {COST_MODELS[choice]}", ""]
                command = "attn-plugins bench cost" + ("" if choice == "minilm" else f" --model {choice}")
            lines += [f"`{command}`", "", *table(data), ""]
    if args.notes is not None:
        lines += [args.notes.read_text("utf-8").strip(), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    minilm = [p for p in args.cost or [] if json.loads(p.read_text("utf-8")).get("model_choice", "minilm") == "minilm"]
    if minilm:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from faithful_table import replace_block

        readme = Path(__file__).resolve().parent.parent / "README.md"
        body = readme_cost(json.loads(minilm[0].read_text("utf-8")))
        readme.write_text(replace_block(readme.read_text("utf-8"), "cost-summary", body), encoding="utf-8")
    print(args.out)


if __name__ == "__main__":
    main()
