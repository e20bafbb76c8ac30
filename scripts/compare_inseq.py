"""Reference numbers for value zeroing from inseq's own implementation, on tiny decoders.

Run from the project's environment, naming the python of a SEPARATE virtual environment that holds
inseq 0.7.1 (installed ``--no-deps`` plus what it imports) and transformers 4.53.x::

    python scripts/compare_inseq.py --inseq-python /tmp/inseq-venv/bin/python

inseq 0.7.1 does not run with transformers 5: its value-zeroing hook rebuilds each decoder layer's output as a
tuple (``output[:i] + (clean,) + output[i+1:]``), and transformers >= 4.56 decoder layers return a bare
tensor (``TypeError: unsupported operand type(s) for +: 'Tensor' and 'tuple'``); it also finds GPT-2's value
vectors by the local variable name ``value``, which transformers renamed (``Could not find assignment to
value``), so GPT-2 is left out. transformers 4.53.3 is the newest release it runs with here.

The project side builds each model with :func:`attn_plugins.zoo.tiny_model` (fixed seeds), saves it and the
tiny tokenizer to a temporary folder, and the inseq environment loads them from there. inseq explains the
next token of the prompt; its value-zeroing scores are the last prompt row of each layer's matrix, which
``tests/methods/test_value_zeroing.py`` compares with ours. Written to
``benchmarks/results/value_zeroing_inseq.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "value_zeroing_inseq.json"
MODELS = ("llama", "qwen2", "mistral", "gemma", "phi3")
TEXTS = ("a very good movie", "the film was not bad at all")
SEED = 0


def run_inseq(folder: Path) -> dict:
    """Inside the inseq environment: per model and text, inseq's value-zeroing rows [layers, prompt tokens]."""
    import logging

    import inseq
    import transformers

    logging.disable(logging.WARNING)
    out: dict = {"inseq": getattr(inseq, "__version__", "0.7.1"), "transformers": transformers.__version__}
    for model_type in MODELS:
        model = inseq.load_model(str(folder / model_type), "value_zeroing")
        rows = []
        for text in TEXTS:
            res = model.attribute(text, generation_args={"max_new_tokens": 1, "do_sample": False}, show_progress=False)
            seq = res.sequence_attributions[0]
            scores = seq.target_attributions  # [tokens, steps, layers]: the prompt rows, then the generated token
            n = len(seq.target) - 1
            rows.append({"text": text, "ids": [t.id for t in seq.target[:n]], "scores": scores[:n, 0].T.tolist()})
        out[model_type] = rows
    return out


def save_models(folder: Path) -> None:
    """In the project environment: the tiny models and tokenizer, loadable by transformers 4.53."""
    from attn_plugins.zoo import tiny_model, tiny_tokenizer, tiny_vocab

    tok = tiny_tokenizer("gpt")
    for model_type in MODELS:
        model = tiny_model(model_type, seed=SEED, vocab_size=len(tiny_vocab("gpt")))
        path = folder / model_type
        model.save_pretrained(path)
        tok.save_pretrained(path)
        # transformers 5 names its tokenizer class TokenizersBackend; 4.x knows the same file as a fast tokenizer.
        config = json.loads((path / "tokenizer_config.json").read_text())
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        (path / "tokenizer_config.json").write_text(json.dumps(config))


def main() -> None:
    """Save the models here, run inseq in its own environment, write the reference file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inseq-python", help="python of the environment holding inseq 0.7.1")
    parser.add_argument("--run-inseq", help=argparse.SUPPRESS)  # internal: the inseq side, on a model folder
    args = parser.parse_args()
    if args.run_inseq:
        json.dump(run_inseq(Path(args.run_inseq)), sys.stdout)
        return
    if not args.inseq_python:
        parser.error("--inseq-python is required (the separate environment holding inseq 0.7.1)")
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        save_models(Path(tmp))
        done = subprocess.run(
            [args.inseq_python, __file__, "--run-inseq", tmp], capture_output=True, text=True, check=True
        )
    ref = json.loads(done.stdout)
    ref["project"] = {"transformers": transformers.__version__, "torch": torch.__version__, "seed": SEED}
    OUT.write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
