"""The standalone report page: text, model output, highlighting per method, head and model views, head summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import AttnPluginsError, InputError, PluginError
from ..metrics.diagnostics import diagnose, disagreement
from ..record import AttentionRecord, Selection
from .attention import check_kinds, check_record, head_view, model_view, neuron_view
from .highlight import side_by_side
from .page import Fragment, View, escape
from .payload import DEFAULT_THRESHOLD
from .summary import head_summary

# The neuron view draws every query/key vector element; beyond this many tokens the report leaves it out.
NEURON_MAX_TOKENS = 64


class Report(View):
    """One standalone page about one or more records (``.html``, ``.save(path)``, ``.records``)."""

    records: list[AttentionRecord]


def describe_output(record: AttentionRecord) -> str | None:
    """A one-line description of the model output in ``record.outputs["logits"]`` (class or next token)."""
    logits = record.outputs.get("logits")
    if logits is None:
        return None
    x = logits.detach().float()
    if x.dim() == 2 and x.shape[0] > 1:
        # Language-model logits [positions, vocabulary]: the last row predicts the next token.
        probs = torch.softmax(x[-1], -1)
        top = int(probs.argmax())
        return f"next token id {top} (p = {probs[top]:.3f}) from logits of shape {tuple(x.shape)}"
    x = x.reshape(-1)
    if x.numel() < 2:
        return f"output {x.tolist()}"
    probs = torch.softmax(x, -1)
    top = int(probs.argmax())
    labels = record.meta.get("id2label")
    labels = labels if isinstance(labels, dict) else {}
    name = labels.get(str(top), labels.get(top, f"label {top}"))
    shown = ", ".join(f"{p:.3f}" for p in probs[:10].tolist())
    more = ", ..." if x.numel() > 10 else ""
    return f"predicted {name} (p = {probs[top]:.3f}); class probabilities [{shown}{more}]"


def _per_record_scores(scores: Mapping[str, Any] | None, n: int) -> list[dict[str, Any]]:
    """Split {method: scores} into one mapping per record (a list or 2-D array per method for batches)."""
    if scores is None:
        return [{} for _ in range(n)]
    if not isinstance(scores, Mapping):
        raise InputError(f"scores must be a mapping {{method name: per-token scores}}, got {type(scores).__name__}")
    if n == 1:
        return [dict(scores)]
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, value in scores.items():
        per = list(value) if not isinstance(value, np.ndarray) or value.ndim >= 2 else None
        if per is None or len(per) != n:
            raise InputError(f"scores of {name!r} must hold one score array per record ({n} records)")
        for i, s in enumerate(per):
            out[i][name] = s
    return out


def _header(record: AttentionRecord, model_name: str | None, output: str | None) -> Fragment:
    meta = record.meta
    facts = [f"model: {model_name}" if model_name else None]
    facts.append(f"type: {meta['model_type']}" if meta.get("model_type") else None)
    facts.append(f"adapter: {meta['adapter']}" if meta.get("adapter") else None)
    facts.append("attention: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in record.attentions.items()))
    text = record.text if record.text else " ".join(record.tokens)
    parts = [
        f'<p class="attn-meta">{escape(" · ".join(f for f in facts if f))}</p>',
        f'<h3>Input</h3><div class="attn-output" data-role="text">{escape(text)}</div>',
    ]
    if record.target_tokens is not None:
        target = record.target_text if record.target_text else " ".join(record.target_tokens)
        parts.append(f'<h3>Target</h3><div class="attn-output" data-role="target">{escape(target)}</div>')
    if output:
        parts.append(f'<h3>Model output</h3><div class="attn-output" data-role="output">{escape(output)}</div>')
    return Fragment("".join(parts), height=200)


# Sandbox of a frame holding another view's page: its scripts run, but with an opaque origin they can
# reach neither this page nor anything it holds (no allow-same-origin), and it cannot navigate it.
FRAME_SANDBOX = "allow-scripts"
FRAME_HEIGHT = 420


def extra_views(names: Sequence[str] | None) -> list[tuple[str, Any, str | None]]:
    """(name, view function, blame) of each registered view named; blame names a third-party view's plugin."""
    if names is None:
        return []
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise InputError(f"views must be a list of registered view names, got {type(names).__name__}")
    from ..plugins import get_registry

    registry = get_registry()
    out = []
    for name in names:
        if not isinstance(name, str):
            raise InputError(f"views must be registered view names, got {name!r}")
        if name == "report":
            raise InputError("the report cannot hold a report view of its own")
        view = registry.get("view", name)
        out.append((name, view, None if registry.is_builtin("view", name) else registry.blame("view", name)))
    return out


def view_html(result: Any) -> str | None:
    """The HTML a view returned: a string, a View's standalone page, or an object's ``_repr_html_()``."""
    if isinstance(result, str):
        return result
    if isinstance(result, View):
        return result.html
    html = getattr(result, "html", None)
    if isinstance(html, str):
        return html
    repr_html = getattr(result, "_repr_html_", None)
    if callable(repr_html):
        html = repr_html()
        return html if isinstance(html, str) else None
    return None


def framed_view(name: str, view: Any, blame: str | None, record: AttentionRecord) -> Fragment:
    """The view ``name`` of ``record`` in a sandboxed frame; a third-party view's failure blames its plugin."""
    who = blame or f"view {name!r}"
    try:
        html = view_html(view(record))
    except AttnPluginsError:
        raise
    except Exception as exc:
        if blame is None:
            raise  # a built-in view's bug: the traceback is ours to read
        lines = str(exc).strip().splitlines()
        raise PluginError(f"{blame} failed: {type(exc).__name__}: {lines[0] if lines else ''}") from exc
    if html is None:
        raise PluginError(f"{who} returned no HTML (a string, a page with .html, or an object with _repr_html_)")
    body = (
        f'<div class="attn-view" data-view="{escape(name)}"><h3>{escape(name)}</h3>'
        f'<iframe sandbox="{FRAME_SANDBOX}" srcdoc="{escape(html)}" title="{escape(name)}" '
        f'style="width:100%;height:{FRAME_HEIGHT}px;border:1px solid #ddd"></iframe></div>'
    )
    return Fragment(body, height=FRAME_HEIGHT + 60)


def trust_section(
    record: AttentionRecord,
    scores: Mapping[str, Any],
    reference: str | None,
    note: str | None = None,
    method_note: str | None = None,
) -> Fragment:
    """When attention misleads: sink and diffuse heads; the methods ranked by agreement with the reference.

    ``note`` says what the reference is (exact Shapley values, or an estimate and its own error). The
    method that agrees best with it on this text is named as the one to read, unless none agrees.
    ``method_note`` names the method recommended for the model before any text is read (the benchmark's
    most faithful method that supports it, and why more faithful ones were refused).
    """
    items = []  # (class, text): attn-warn for head diagnostics, attn-flag / attn-ok for agreement
    if method_note:
        items.append(("attn-ref", method_note))
    for kind in record.kinds:
        if record.attentions[kind].shape[-1] < 2:
            continue  # one key per row (a decoder at its start token): no head is diffuse or a sink
        label = f"{kind} attention: " if len(record.kinds) > 1 else ""
        items += [("attn-warn", label + w) for w in diagnose(record, kind).warnings]
    if reference is not None:
        if note:
            items.append(("attn-ref", note))
        ref = np.asarray(scores[reference], dtype=float)
        special = record.special_tokens_mask
        protected = np.asarray(special, dtype=bool) if special is not None and len(special) == len(ref) else None
        ranked, failed = [], []
        for name, values in scores.items():
            if name == reference:
                continue
            try:
                d = disagreement(values, ref, protected=protected, view_name=name, reference_name=reference)
            except InputError as exc:  # e.g. constant scores have no ranking to compare
                failed.append(("attn-warn", f"{name} cannot be compared with {reference}: {exc}"))
                continue
            ranked.append((name, d))
        ranked.sort(key=lambda item: -item[1].spearman)
        if ranked:
            best, d = ranked[0]
            order = ", ".join(f"{n} {x.spearman:.2f}" for n, x in ranked)
            if d.flagged:
                items.append(
                    (
                        "attn-flag",
                        f"No method agrees with {reference} on this text (best: {best}, Spearman {d.spearman:.2f}); "
                        f"read the reference itself. Ranking by Spearman: {order}",
                    )
                )
            else:
                items.append(
                    (
                        "attn-ok attn-best",
                        f"Read {best}: of the {len(ranked)} methods it agrees best with {reference} on this text "
                        f"(Spearman {d.spearman:.2f}, top-{d.k} overlap {d.top_k_overlap:.0%}). Ranking by Spearman: {order}",
                    )
                )
        items += [("attn-flag" if d.flagged else "attn-ok", d.message) for _, d in ranked]
        items += failed
    if not items:
        items.append(("attn-ok", "no sink or diffuse heads found; no faithful reference was computed to compare with"))
    rows = "".join(
        f'<li class="{cls}">{"&#9888; " if cls in ("attn-warn", "attn-flag") else ""}{escape(text)}</li>'
        for cls, text in items
    )
    return Fragment(
        f'<h2>Can this view be trusted?</h2><ul class="attn-trust">{rows}</ul>', height=60 + 24 * len(items)
    )


def report(
    records: AttentionRecord | Sequence[AttentionRecord],
    scores: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    output_summary: str | Sequence[str] | None = None,
    *,
    reference: str | None = None,
    reference_note: str | Sequence[str | None] | None = None,
    title: str | None = None,
    kind: Sequence[str] | str | None = None,
    layers: Selection = None,
    heads: Selection = None,
    renderer: str = "auto",
    threshold: float = DEFAULT_THRESHOLD,
    views: Sequence[str] | None = None,
    method_note: str | None = None,
    attention_note: str | None = None,
) -> Report:
    """One standalone page per call: for each record its text and output, scores per method, views, head summary.

    ``scores`` maps a method name to per-token scores (for several records: one array per record).
    ``output_summary`` describes the model output (one string per record for several); by default it is
    read from ``record.outputs["logits"]``. ``reference`` names the entry of ``scores`` that is a faithful
    attribution (e.g. Shapley values): every other method is ranked against it and flagged when it
    disagrees; ``reference_note`` (one per record for several) says what that reference is.
    ``kind``, ``layers`` and ``heads`` choose what the attention views draw, as in every view. ``views``
    names registered views (a plugin's, e.g. ``"token_table"``) to add for each record: each is called
    with the record and shown in its own sandboxed frame (scripts run, but cannot reach this page), and a
    view that fails is a PluginError naming it and its plugin. ``method_note`` (one sentence) opens the trust
    section: the method recommended for the model and why. ``attention_note`` is a sentence shown above the
    attention views (e.g. which layers they draw). The page's ``records`` are the records it shows.
    """
    recs = (
        [records] if isinstance(records, AttentionRecord) else list(records) if isinstance(records, Sequence) else None
    )
    if not recs:
        raise InputError("report needs an AttentionRecord or a non-empty list of them")
    recs = [check_record(r) for r in recs]
    extra = extra_views(views)
    per_scores = _per_record_scores(scores, len(recs))
    if reference is not None and (scores is None or reference not in scores):
        raise InputError(f"reference {reference!r} is not one of the scores")
    if output_summary is None or isinstance(output_summary, str):
        outputs = [output_summary] * len(recs)
    else:
        outputs = list(output_summary)
        if len(outputs) != len(recs):
            raise InputError(f"{len(outputs)} output summaries for {len(recs)} records")
    if reference_note is None or isinstance(reference_note, str):
        notes = [reference_note] * len(recs)
    else:
        notes = list(reference_note)
        if len(notes) != len(recs):
            raise InputError(f"{len(notes)} reference notes for {len(recs)} records")
    page_title = title or (f"Attention report: {model_name}" if model_name else "Attention report")
    fragments = [Fragment(f"<h1>{escape(page_title)}</h1>", height=50)]
    for i, (rec, rec_scores, out, note) in enumerate(zip(recs, per_scores, outputs, notes)):
        if len(recs) > 1:
            fragments.append(Fragment(f"<h2>Example {i + 1}</h2>", height=40))
        fragments.append(_header(rec, model_name, out if out is not None else describe_output(rec)))
        if rec_scores:
            fragments.extend(side_by_side(rec, rec_scores).fragments_for_page())
        fragments.append(trust_section(rec, rec_scores, reference, note, method_note))
        fragments.append(Fragment("<h2>Attention</h2>", height=40))
        if attention_note:
            fragments.append(Fragment(f"<p>{escape(attention_note)}</p>", height=40))
        chosen = {"kind": kind, "layers": layers, "heads": heads, "threshold": threshold}
        fragments.extend(head_view(rec, renderer=renderer, **chosen).fragments)
        fragments.extend(model_view(rec, renderer=renderer, **chosen).fragments)
        drawn = check_kinds(rec, kind)
        if (
            any(k in rec.queries and k in rec.keys for k in drawn)
            and rec.attentions[rec.default_kind].shape[-1] <= NEURON_MAX_TOKENS
        ):
            qk_kinds = [k for k in drawn if k in rec.queries and k in rec.keys]
            fragments.extend(neuron_view(rec, **{**chosen, "kind": qk_kinds}).fragments)
        fragments.append(Fragment("<h2>Per-head summary</h2>", height=40))
        fragments.extend(head_summary(rec, k).fragment() for k in drawn)
        if extra:
            fragments.append(Fragment("<h2>More views</h2>", height=40))
            fragments.extend(framed_view(name, view, blame, rec) for name, view, blame in extra)
    page = Report(fragments, page_title)
    page.records = recs
    return page
