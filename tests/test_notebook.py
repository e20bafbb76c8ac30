"""examples/tour.ipynb: committed without outputs, as scripts/write_tour.py writes it, and it runs top to
bottom in a fresh kernel (nbclient) with no error output; its views display as sandboxed frames."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "tour.ipynb"


def _generator():
    spec = importlib.util.spec_from_file_location("write_tour", ROOT / "scripts" / "write_tour.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_is_committed_without_outputs_as_generated() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "strip the outputs before committing"
    generated = [(c.cell_type, c.source) for c in _generator().notebook().cells]
    assert [(c.cell_type, c.source) for c in nb.cells] == generated, "run scripts/write_tour.py"


def test_tour_runs_without_errors(tmp_path, monkeypatch) -> None:
    # The kernel inherits this environment: MPLBACKEND=Agg would make shap's plots display nothing.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,  # per cell
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
        allow_errors=True,  # collect every error below, not just the first cell's
    )
    client.execute()
    errors = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                errors.append(f"cell {i}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr" and "Traceback" in out.text:
                errors.append(f"cell {i}: a traceback on stderr:\n{out.text}")
    assert not errors, "\n".join(errors)
    html = [o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    frames = [h for h in html if h.lstrip().startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in h]
    assert len(frames) >= 3, "head view, model view and report display as sandboxed frames"
    assert any("<svg" in h for h in html), "the heatmap displays inline"
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert pngs, "shap.plots.bar draws a PNG through the inline backend"
    (compare_cell,) = [c for c in nb.cells if c.cell_type == "code" and "ap.compare(" in c.source]
    printed = "".join(o.get("text", "") for o in compare_cell.get("outputs", []))
    assert all(m in printed for m in ("cplrp_mask", "attnlrp", "rollout", "raw")), "compare prints its table"
    (report_cell,) = [c for c in nb.cells if c.cell_type == "code" and "ap.report(" in c.source]
    page = "".join(o["data"].get("text/html", "") for o in report_cell.get("outputs", []) if "data" in o)
    assert "Can this view be trusted?" in page and "Ranking by Spearman: " in page, "the report shows its trust section"

    if os.environ.get("ATTN_KEEP_NOTEBOOK"):
        nbformat.write(nb, ROOT / "test-artifacts" / "tour.executed.ipynb")


def test_tour_leads_with_the_faithful_method_and_the_trust_section() -> None:
    """The first explanation uses a faithful method (not raw attention or rollout); the report comes before the views."""
    code = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    first_method = next(s.split('method="', 1)[1].split('"', 1)[0] for s in code if "ap.explain(" in s)
    assert first_method in ("cplrp_mask", "attnlrp")
    report = next(i for i, s in enumerate(code) if "ap.report(" in s)
    views = min(i for i, s in enumerate(code) if "ap.capture(" in s or "ap.views." in s)
    assert report < views, "the report and its trust section come before the attention views"
