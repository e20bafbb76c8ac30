"""ap.report: the standalone HTML report of a text, with every method checked against Shapley values.

The page the command line's ``explain`` and ``demo`` write: the text, the model's output, each method's
highlighting next to the reference's Shapley values, a "can this view be trusted?" section that ranks
the methods against them and says which to read, the head, model and neuron views and a per-head summary.
The reference is the best one the text affords: exact Shapley values when it has at most ``exact_max``
maskable tokens, else shap's Partition estimate, whose own error (measured against exact values by
``attn-plugins bench faithful``) the page states.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..capture import capture
from ..errors import InputError, PluginError
from ..views.report import Report, extra_views
from ..views.report import report as report_view
from .compare import EXACT_MAX, compare
from .defaults import REPORT_METHODS, REPORT_SHAP_EVALS
from .explainer import AttentionExplainer

# The methods a report shows when none are named (the faithful ones and two cheap baselines).
DEFAULT_METHODS = REPORT_METHODS

SHAP_ROW = "Shapley values (reference)"
# The views store every weight they draw (8 bits, deflated: about 0.65 bytes a weight on MiniLM). Past this many
# weights (about 3 MB of page) a report draws its last layers only: all 6 layers of MiniLM at 512 tokens
# (18.9 million weights) made a 12 MB page that thresholds barely shrink (dropping weights under 1e-3 loses
# 9 % of a row's mass on average and saves 40 %).
VIEW_MAX_WEIGHTS = 1 << 22
# Written by benchmarks/faithful_table.py from benchmarks/results/faithful.json (a test keeps them equal).
REFERENCE_ACCURACY = "reference_accuracy.json"
# Written by benchmarks/sampling_table.py from benchmarks/results/sampling.json (the "sampled" reference).
SAMPLED_ACCURACY = "sampled_accuracy.json"


def reference_error(max_evals: int, kind: str = "partition") -> str | None:
    """A reference's measured agreement with exact Shapley values at ``max_evals`` evaluations, as a sentence.

    ``kind``: ``"partition"`` (shap's Partition explainer), ``"sampled"`` (the sampled reference) or
    ``"sampled_prior"`` (its fallback below the maskable tokens + 1 evaluations).
    """
    from importlib import resources

    name = SAMPLED_ACCURACY if kind.startswith("sampled") else REFERENCE_ACCURACY
    try:
        data = json.loads(resources.files("attn_plugins.explain").joinpath(name).read_text("utf-8"))
    except FileNotFoundError:
        return None
    entry = data[kind].get(str(max_evals))
    if entry is None:
        measured = ", ".join(data[kind])
        return f"its error at {max_evals} evaluations was not measured (the benchmark measured {measured})"
    rho = entry["spearman"]
    return (
        f"measured against exact values on {data['source']}, its Spearman is {rho['mean']:.2f} "
        f"[{rho['ci95'][0]:.2f}, {rho['ci95'][1]:.2f}] at {max_evals} evaluations"
    )


def report(
    model: Any,
    tokenizer: Any,
    texts: str | Sequence[str],
    methods: Sequence[str] | None = None,
    *,
    model_name: str | None = None,
    task: str | None = None,
    target: int | str | None = None,
    reference: str | None = None,
    truncation: bool = False,
    max_new_tokens: int | None = None,
    contrast: str | None = None,
    contrast_token: Any = None,
    shap_evals: int = REPORT_SHAP_EVALS,
    faithful_reference: str = "auto",
    exact_max: int = EXACT_MAX,
    views: Sequence[str] | None = None,
) -> Report:
    """The standalone HTML report of ``texts``: each method's highlighting beside Shapley values, the views.

    Each text is captured, scored with every method in ``methods`` (default :data:`DEFAULT_METHODS`) and,
    with ``shap_evals > 0`` and a task shap can mask, with a faithful reference on the same target, which
    the report's "can this view be trusted?" section ranks every method against: ``faithful_reference``
    ``"auto"`` (exact Shapley values when the text has at most ``exact_max`` maskable tokens, else shap's
    Partition explainer at ``shap_evals`` evaluations, by default :data:`~attn_plugins.explain.defaults.REPORT_SHAP_EVALS`,
    as accurate as 500 on the faithfulness benchmark), ``"exact"``, ``"shap"`` or ``"sampled"`` (exact when short
    enough, else sampled Shapley values from a balanced design, each with its measured error; see
    :func:`~attn_plugins.explain.compare`);
    ``shap_evals=0`` skips it. ``truncation=True`` explains the longest prefix of a text that fits the
    model (else a text too long is an InputError naming it). ``views`` adds registered views (e.g. a
    plugin's) in sandboxed frames, as :func:`attn_plugins.views.report` does. The page's ``records`` are
    the captured records. ``attn-plugins explain`` writes this page.

    A language model's generated tokens (``max_new_tokens``, a given continuation ``target="..."``) are
    shown with each method's scores averaged over the steps; ``contrast_token`` / ``contrast`` explain
    "this token rather than that" and the page names both tokens of every step (no Shapley reference is
    computed for a contrast or a generation, and methods that read attention only are left out of the
    default list, since they do not depend on the explained output).
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise InputError("the report needs at least one text")
    if not isinstance(shap_evals, int) or isinstance(shap_evals, bool) or shap_evals < 0:
        raise InputError(f"shap_evals must be 0 (no shap reference) or a positive budget, got {shap_evals!r}")
    extra_views(views)  # unknown view names fail before any model work
    # Without a method the probe picks the most faithful one that supports the model (explain.defaults): the
    # page recommends it, says why each more faithful method was refused, and shows it among the methods.
    generation = {"max_new_tokens": max_new_tokens, "contrast": contrast, "contrast_token": contrast_token}
    generation = {k: v for k, v in generation.items() if v is not None}
    probe = AttentionExplainer(
        model, tokenizer, task=task, target=target, reference=reference, truncation=truncation, **generation
    )
    choice = probe.choice
    methods = list(methods) if methods is not None else list(DEFAULT_METHODS)
    if contrasted(generation) and methods == list(DEFAULT_METHODS):
        methods = [m for m in methods if explains_output(model, tokenizer, m)]
    if choice is not None and choice.method not in methods:
        methods.append(choice.method)
    # Resolving checks every text's length first (naming the one too long) and, with truncation, gives the
    # prefix each method and shap explain; the page shows the same prefix.
    specs = probe.resolve_all(texts)
    records = []
    for spec, t in zip(specs, texts):
        decoder = (spec.inputs or {}).get("decoder_input_ids")
        if spec.task in ("generation", "seq2seq") or decoder is not None:
            # The prompt (source) and the earlier generated tokens (an encoder-decoder's decoder inputs).
            record = capture(model, tokenizer, inputs=spec.inputs, qk=True)
            if decoder is not None and record.target_tokens is None:  # name the decoder's tokens
                ids = [int(i) for i in decoder[0]]
                record.target_tokens = [tokenizer.decode([i]) for i in ids]
                record.target_special_tokens_mask = [i in set(tokenizer.all_special_ids) for i in ids]
        else:
            record = capture(model, tokenizer, spec.text if spec.text is not None else t, qk=True)
        record.meta.update({k: v for k, v in spec.meta.items() if k in ("truncated", "original_tokens")})
        records.append(record)
    # Similarity has no logits for the report to describe: state the explained value itself.
    outputs = [
        f"{s.label}: {float(s.fn([s.text])[0]):.3f}" if s.task == "similarity" else explained_summary(s) for s in specs
    ]
    use_shap = shap_evals > 0 and all(s.fn is not None for s in specs) and not contrasted(generation)
    notes: list[str | None] = [None] * len(texts)
    common = {"task": task, "target": target, "reference": reference, "truncation": truncation, **generation}
    if use_shap:
        rows, notes = _scores_with_shap(
            model, tokenizer, texts, methods, shap_evals, faithful_reference, exact_max, **common
        )
    else:
        rows = _scores(model, tokenizer, texts, methods, **common)
    for name, per_text in rows.items():
        # An encoder-decoder's record holds its source tokens: the decoder's (earlier generated) are cut off.
        rows[name] = [v[: len(r.tokens)] if s.task == "seq2seq" else v for v, r, s in zip(per_text, records, specs)]
        per_text = rows[name]
        for record, values in zip(records, per_text):
            if len(values) != len(record.tokens):
                raise InputError(f"{name} gave {len(values)} scores for {len(record.tokens)} tokens")
    ref = SHAP_ROW if use_shap else None
    layers, note = view_layers(records)
    if len(records) == 1:
        single = {m: np.asarray(v[0], dtype=float) for m, v in rows.items()}
        page = report_view(
            records[0],
            single,
            model_name=model_name,
            output_summary=outputs[0],
            reference=ref,
            reference_note=notes[0],
            views=views,
            method_note=recommendation(choice),
            layers=layers,
            attention_note=note,
        )
    else:
        page = report_view(
            records,
            rows,
            model_name=model_name,
            output_summary=outputs,
            reference=ref,
            reference_note=notes,
            views=views,
            method_note=recommendation(choice),
            layers=layers,
            attention_note=note,
        )
    return page


def contrasted(options: dict[str, Any]) -> bool:
    """Whether the report explains a contrast ("this token rather than that")."""
    return options.get("contrast") is not None or options.get("contrast_token") is not None


def explains_output(model: Any, tokenizer: Any, method: str) -> bool:
    """Whether ``method`` depends on the explained output (gradients or relevance), so a contrast changes it."""
    from ..methods import get_method

    m = get_method(method)
    return "gradients" in tuple(getattr(m, "requires", ())) or bool(getattr(m, "explains_target", False))


def explained_summary(spec: Any) -> str | None:
    """What a language model's target explains, naming both tokens of a contrast at every step (None: the
    record's own logits describe it)."""
    meta = spec.meta
    if spec.task == "next_token" and "contrast_tokens" in meta:
        return f"explained: {spec.label} ({meta['token']!r} rather than {meta['contrast_tokens'][0]!r})"
    if spec.task not in ("generation", "seq2seq"):
        return None
    tokens = meta["generated_tokens"]
    shown = "generated" if not meta.get("forced") else "given continuation"
    text = f"{shown}: {' '.join(tokens)!r}; explained: {meta['explained']}"
    if "contrast_tokens" in meta:
        pairs = ", ".join(f"{a!r} rather than {b!r}" for a, b in zip(tokens, meta["contrast_tokens"]))
        text += f" ({pairs})"
    text += "; scores are the mean over the explained tokens"
    if meta.get("stopped_early"):
        text += f". {meta['stopped_reason'][0].upper()}{meta['stopped_reason'][1:]}"
    return text


def recommendation(choice: Any) -> str | None:
    """The report's sentence on the method to read for this model, from the faithfulness benchmark's ranking."""
    if choice is None:
        return None
    return f"Recommended method for this model (faithfulness benchmark, Spearman with exact Shapley values): {choice.note()}."


def view_layers(records: Sequence[Any]) -> tuple[list[int] | None, str | None]:
    """The layers the attention views draw (None: all) and a sentence saying so when some are left out."""
    kind_shapes = [r.attentions[r.default_kind].shape for r in records]
    n_layers = min(s[0] for s in kind_shapes)
    per_layer = max(int(s[1]) * int(s[-2]) * int(s[-1]) for s in kind_shapes)
    keep = max(1, min(n_layers, VIEW_MAX_WEIGHTS // max(per_layer, 1)))
    if keep >= n_layers:
        return None, None
    shown = f"layer {n_layers - 1}" if keep == 1 else f"layers {n_layers - keep}-{n_layers - 1}"
    return list(range(n_layers - keep, n_layers)), (
        f"The views draw the last {'layer' if keep == 1 else f'{keep} layers'} ({shown} of {n_layers}): every "
        f"layer of {kind_shapes[0][-1]} tokens would put {n_layers * per_layer / 1e6:.0f} million weights into "
        "this page. ap.views.model_view(page.records[0]) draws them all."
    )


def _scores(
    model: Any, tokenizer: Any, texts: Sequence[str], methods: Sequence[str], **common: Any
) -> dict[str, list[Any]]:
    """Per-method, per-text token scores from the explainer (several outputs, as QA's, are averaged)."""

    rows: dict[str, list[Any]] = {}
    for method in progress(methods, "methods"):
        explainer = AttentionExplainer(model, tokenizer, method=method, special_tokens=True, **common)
        explanation = explainer(list(texts))
        values = [np.asarray(v, dtype=float) for v in explanation.values]
        rows[method] = [v.mean(-1) if v.ndim == 2 else v for v in values]
    return rows


def _scores_with_shap(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    methods: Sequence[str],
    shap_evals: int,
    faithful_reference: str,
    exact_max: int,
    *,
    task: Any,
    target: Any,
    reference: Any,
    truncation: bool,
) -> tuple[dict[str, list[Any]], list[str]]:
    """Per-method and reference token scores from one ap.compare run, and a sentence per text on the reference."""

    result = compare(
        model,
        tokenizer,
        list(texts),
        methods=list(methods),
        target=reference if reference is not None else target,
        max_evals=shap_evals,
        task=task,
        reference=faithful_reference,
        exact_max=exact_max,
        truncation=truncation,
    )
    failed = [row for row in result.methods if row.get("error")]
    if failed:
        error = failed[0]["error"]
        if error.startswith("PluginError: "):  # the message already names the method and its plugin
            raise PluginError(error.removeprefix("PluginError: "))
        raise InputError(f"method {failed[0]['method']} failed: {error}")
    rows = {m: [d["methods"][m] for d in result.details] for m in methods}
    rows[SHAP_ROW] = [d["shap"] for d in result.details]
    return rows, [reference_sentence(d, shap_evals) for d in result.details]


def reference_sentence(detail: dict[str, Any], max_evals: int) -> str:
    """Which reference one text was checked against, and how good that reference is."""
    n = detail["evaluations"]
    if detail["reference"] == "exact":
        return (
            f"Reference: exact Shapley values of the explained output, every coalition of the maskable tokens "
            f"evaluated ({n} masked inputs, shap's Text masker)."
        )
    why = f" {detail['reference_note']}." if detail.get("reference_note") else ""
    if detail["reference"] == "sampled":
        from .compare import SAMPLED_FALLBACK

        fallback = SAMPLED_FALLBACK in (detail.get("reference_note") or "")
        error = reference_error(max_evals, "sampled_prior" if fallback else "sampled")
        return (
            f"Reference: sampled Shapley values at {max_evals} evaluations ({n} masked inputs), an estimate.{why}"
            + (f" Its own error: {error}, on texts short enough for exact values." if error else "")
        )
    error = reference_error(max_evals)
    values = np.asarray(detail["shap"], float)
    # Partition splits the text into a hierarchy of groups and gives a group's tokens one value until its budget
    # reaches them; how many values it told apart on this text shows how coarse the estimate is here.
    distinct = len(np.unique(values[values != 0]))
    return (
        f"Reference: shap's Partition explainer at {max_evals} evaluations ({n} masked inputs), an estimate.{why}"
        + (
            f" Its own error: {error}, on texts short enough for exact values; on this text it told apart "
            f"{distinct} values over {len(values)} tokens (tokens of one group share a value)."
            if error
            else ""
        )
    )


def progress(items: Sequence[Any], what: str) -> Any:
    """``items`` with a progress bar on stderr when there are several (tqdm, as bertviz depends on it)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=what, disable=len(items) < 2, leave=False, file=sys.stderr)
