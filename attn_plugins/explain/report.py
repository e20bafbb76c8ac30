"""ap.report: the standalone HTML report of a text, with every method checked against shap.

The page the command line's ``explain`` and ``demo`` write: the text, the model's output, each method's
highlighting next to shap's values, a "can this view be trusted?" section, the head, model and neuron
views and a per-head summary.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..capture import capture
from ..errors import InputError, PluginError
from ..views.report import Report, extra_views
from ..views.report import report as report_view
from .compare import compare
from .explainer import AttentionExplainer
from .targets import describe_example

# The methods a report shows when none are named.
DEFAULT_METHODS = ("raw", "rollout", "flow", "grad_attention", "gae", "norm", "alti")

SHAP_ROW = "shap (reference)"


def report(
    model: Any,
    tokenizer: Any,
    texts: str | Sequence[str],
    methods: Sequence[str] | None = None,
    *,
    model_name: str | None = None,
    task: str | None = None,
    target: int | None = None,
    reference: str | None = None,
    truncation: bool = False,
    shap_evals: int = 500,
    views: Sequence[str] | None = None,
) -> Report:
    """The standalone HTML report of ``texts``: each method's highlighting beside shap's values, the views.

    Each text is captured, scored with every method in ``methods`` (default :data:`DEFAULT_METHODS`) and,
    with ``shap_evals > 0`` and a task shap can mask, with shap's Partition explainer on the same target,
    which the report's "can this view be trusted?" section checks every method against; ``shap_evals=0``
    skips it. ``truncation=True`` explains the longest prefix of a text that fits the model (else a text
    too long is an InputError naming it). ``views`` adds registered views (e.g. a plugin's) in sandboxed
    frames, as :func:`attn_plugins.views.report` does. The page's ``records`` are the captured records.
    ``attn-plugins explain`` writes this page.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise InputError("the report needs at least one text")
    if not isinstance(shap_evals, int) or isinstance(shap_evals, bool) or shap_evals < 0:
        raise InputError(f"shap_evals must be 0 (no shap reference) or a positive budget, got {shap_evals!r}")
    methods = list(methods) if methods is not None else list(DEFAULT_METHODS)
    extra_views(views)  # unknown view names fail before any model work
    probe = AttentionExplainer(model, tokenizer, task=task, target=target, reference=reference, truncation=truncation)
    # Resolving checks every text's length first (naming the one too long) and, with truncation, gives the
    # prefix each method and shap explain; the page shows the same prefix.
    specs = [probe.resolve(t, describe_example(t, i + 1 if len(texts) > 1 else None)) for i, t in enumerate(texts)]
    records = []
    for spec, t in zip(specs, texts):
        record = capture(model, tokenizer, spec.text if spec.text is not None else t, qk=True)
        record.meta.update({k: v for k, v in spec.meta.items() if k in ("truncated", "original_tokens")})
        records.append(record)
    # Similarity has no logits for the report to describe: state the explained value itself.
    outputs = [f"{s.label}: {float(s.fn([s.text])[0]):.3f}" if s.task == "similarity" else None for s in specs]
    use_shap = shap_evals > 0 and all(s.fn is not None for s in specs)
    common = {"task": task, "target": target, "reference": reference, "truncation": truncation}
    if use_shap:
        rows = _scores_with_shap(model, tokenizer, texts, methods, shap_evals, **common)
    else:
        rows = _scores(model, tokenizer, texts, methods, **common)
    for name, per_text in rows.items():
        for record, values in zip(records, per_text):
            if len(values) != len(record.tokens):
                raise InputError(f"{name} gave {len(values)} scores for {len(record.tokens)} tokens")
    ref = SHAP_ROW if use_shap else None
    if len(records) == 1:
        single = {m: np.asarray(v[0], dtype=float) for m, v in rows.items()}
        page = report_view(
            records[0], single, model_name=model_name, output_summary=outputs[0], reference=ref, views=views
        )
    else:
        page = report_view(records, rows, model_name=model_name, output_summary=outputs, reference=ref, views=views)
    return page


def _scores(
    model: Any, tokenizer: Any, texts: Sequence[str], methods: Sequence[str], **common: Any
) -> dict[str, list[Any]]:
    """Per-method, per-text token scores from the explainer (several outputs, as QA's, are averaged)."""

    rows: dict[str, list[Any]] = {}
    for method in progress(methods, "methods"):
        explainer = AttentionExplainer(model, tokenizer, method=method, **common)
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
    *,
    task: Any,
    target: Any,
    reference: Any,
    truncation: bool,
) -> dict[str, list[Any]]:
    """Per-method and shap token scores from one ap.compare run (each method is computed once)."""

    result = compare(
        model,
        tokenizer,
        list(texts),
        methods=list(methods),
        target=reference if reference is not None else target,
        max_evals=shap_evals,
        task=task,
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
    return rows


def progress(items: Sequence[Any], what: str) -> Any:
    """``items`` with a progress bar on stderr when there are several (tqdm, as bertviz depends on it)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=what, disable=len(items) < 2, leave=False, file=sys.stderr)
