"""head_view, model_view and neuron_view of any AttentionRecord: bertviz's front ends, or canvas for long inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError, MissingCaptureError
from ..record import KINDS, AttentionRecord, Selection, choose
from .bertviz_js import bertviz_script
from .page import Fragment, View, escape, json_block, new_id, visible
from .payload import DEFAULT_THRESHOLD, check_threshold, encode_floats, encode_weights, reference

# Above these many SVG lines per drawing the views switch to canvas: bertviz draws one <line> per weight
# (the head view one layer at a time, the model view every layer and head at once) and hangs beyond this.
HEAD_SVG_LIMIT = 50_000
MODEL_SVG_LIMIT = 200_000
RENDERERS = ("auto", "svg", "canvas")
_KIND_NAMES = {"self": "Self", "encoder": "Encoder", "decoder": "Decoder", "cross": "Cross"}
_FONT = "font-family:'Helvetica Neue', Helvetica, Arial, sans-serif;"


@dataclass
class Section:
    """The attention of one kind, cut to the chosen layers and heads, with its token axes."""

    kind: str
    name: str
    attn: torch.Tensor  # [layers, heads, queries, keys]
    left: list[str]
    right: list[str]
    layers: list[int]  # original layer numbers
    heads: list[int]  # original head numbers
    layer_positions: list[int]  # where those layers sit in the record
    head_positions: list[int]  # where those heads sit in the record


def prettify(tokens: Sequence[str]) -> list[str]:
    """Tokens without sub-word markers, the way bertviz shows them (Ġ and ▁ become spaces), made :func:`visible`."""
    return [visible(t.replace("Ġ", " ").replace("▁", " ").replace("</w>", "")) for t in tokens]


def check_record(record: object) -> AttentionRecord:
    """``record`` validated as an AttentionRecord; anything else is a clear error."""
    if not isinstance(record, AttentionRecord):
        raise InputError(f"views draw an AttentionRecord, got {type(record).__name__}")
    return record.validate()


def check_kinds(record: AttentionRecord, kind: Sequence[str] | str | None) -> list[str]:
    """The kinds a view draws: ``kind`` (one or several), or every kind of the record when None."""
    if kind is None:
        return record.kinds
    kinds = [kind] if isinstance(kind, str) else list(kind)
    if not kinds:
        raise InputError("kind is empty: choose at least one attention kind")
    for k in kinds:
        if k not in KINDS:
            raise InputError(f"unknown attention kind {k!r}; kinds are {', '.join(KINDS)}")
        if k not in record.attentions:
            raise InputError(f"the record has no {k!r} attention; it holds {', '.join(record.kinds)}")
    return kinds


def select(record: AttentionRecord, kind: str, layers: Selection, heads: Selection) -> tuple[list[int], list[int]]:
    """Positions in the record of the chosen layers and heads (original numbers) of one kind."""
    try:
        return choose(layers, record.layer_ids(kind), "layer"), choose(heads, record.head_ids(kind), "head")
    except InputError as exc:
        hint = "" if len(record.kinds) == 1 else "; pass kind= to draw only the kinds that have them"
        raise InputError(f"{kind!r} attention: {exc}{hint}") from None


def sections(
    record: AttentionRecord,
    kind: Sequence[str] | str | None = None,
    layers: Selection = None,
    heads: Selection = None,
    prettify_tokens: bool = True,
) -> list[Section]:
    """One section per attention kind, each with its own layer list (a decoder may have fewer layers)."""
    out = []
    for k in check_kinds(record, kind):
        li, hi = select(record, k, layers, heads)
        layer_ids, head_ids = record.layer_ids(k), record.head_ids(k)
        att = record.attentions[k].index_select(0, torch.tensor(li)).index_select(1, torch.tensor(hi))
        left, right = record.axes(k)
        if prettify_tokens:
            left, right = prettify(left), prettify(right)
        out.append(
            Section(
                k,
                _KIND_NAMES[k],
                att,
                list(left),
                list(right),
                [layer_ids[i] for i in li],
                [head_ids[i] for i in hi],
                li,
                hi,
            )
        )
    return out


def _renderer(renderer: str, lines: int, limit: int) -> str:
    if renderer not in RENDERERS:
        raise InputError(f"renderer must be one of {', '.join(RENDERERS)}, got {renderer!r}")
    if renderer == "auto":
        return "canvas" if lines > limit else "svg"
    return renderer


def _groups(secs: list[Section]) -> list[list[Section]]:
    """Sections that share a layer list can be one bertviz view with a filter; others get their own view."""
    if all(s.layers == secs[0].layers for s in secs):
        return [secs]
    return [[s] for s in secs]


def _filter_select(secs: list[Section]) -> str:
    if len(secs) < 2:
        return ""
    options = "".join(f'<option value="{i}">{escape(s.name)}</option>' for i, s in enumerate(secs))
    return f'Attention: <select id="filter">{options}</select>'


def _bertviz_data(secs: list[Section], threshold: float, blocks: dict[str, dict]) -> list[dict]:
    return [
        {
            "name": s.name,
            "attn": reference(encode_weights(s.attn, threshold), blocks),
            "left_text": s.left,
            "right_text": s.right,
        }
        for s in secs
    ]


def _canvas_fragment(
    secs: list[Section], mode: str, threshold: float, title: str, layer: int = 0, head: int = -1
) -> Fragment:
    """A canvas view; ``layer`` and ``head`` are the positions first shown (head -1: the mean of heads)."""
    root, pid = new_id("attn-canvas"), new_id("attn-params")
    blocks: dict[str, dict] = {}
    params = {
        "threshold": threshold,
        "start": {"layer": layer, "head": head},
        "sections": [
            {
                "name": s.name,
                "left_text": s.left,
                "right_text": s.right,
                "layers": s.layers,
                "heads": s.heads,
                "attn": reference(encode_weights(s.attn, threshold), blocks),
            }
            for s in secs
        ],
    }
    draw = "canvasHead" if mode == "head" else "canvasModel"
    body = (
        f'<div class="attn-view" data-view="{mode}_view" data-renderer="canvas">'
        f'<h3>{escape(title)}</h3>{json_block(pid, params)}<div id="{root}"></div></div>'
    )
    script = f"attnViews.run({pid!r}, {root!r}, false, function (p) {{ attnViews.{draw}({root!r}, p); }});"
    height = 820 if mode == "head" else 110 * max(int(s.attn.shape[0]) for s in secs) + 820
    return Fragment(body, [script], libraries=False, height=height, data=blocks)


class HeadView(View):
    """bertviz's head view (or a canvas heatmap for long inputs) as a standalone page."""


class ModelView(View):
    """bertviz's model view (or a grid of canvas heatmaps for long inputs) as a standalone page."""


class NeuronView(View):
    """bertviz's neuron view, fed with the record's query and key vectors."""


def head_view(
    record: AttentionRecord,
    *,
    kind: Sequence[str] | str | None = None,
    layers: Selection = None,
    heads: Selection = None,
    prettify_tokens: bool = True,
    renderer: str = "auto",
    threshold: float = DEFAULT_THRESHOLD,
) -> HeadView:
    """Attention between tokens, one layer at a time (a menu picks it), every head in its colour.

    ``kind``, ``layers`` and ``heads`` choose what is drawn (original numbers; the first chosen layer is
    shown first); encoder, decoder and cross attention of seq2seq records get one view each. Above
    ``HEAD_SVG_LIMIT`` lines per layer (or with ``renderer="canvas"``) a canvas heatmap is drawn instead.
    """
    record = check_record(record)
    threshold = check_threshold(threshold)
    secs = sections(record, kind, layers, heads, prettify_tokens)
    lines = max(int(s.attn.shape[1] * s.attn.shape[2] * s.attn.shape[3]) for s in secs)
    if _renderer(renderer, lines, HEAD_SVG_LIMIT) == "canvas":
        # The canvas shows one head or the mean of the drawn heads: a single chosen head is shown alone.
        head = 0 if heads is not None and len(secs[0].heads) == 1 else -1
        return HeadView([_canvas_fragment(secs, "head", threshold, "Head view", 0, head)], "Head view")
    fragments = []
    for group in _groups(secs):
        layer_ids = group[0].layers
        root, pid = new_id("bertviz"), new_id("attn-params")
        blocks: dict[str, dict] = {}
        params = {
            "attention": _bertviz_data(group, threshold, blocks),
            "default_filter": "0",
            "root_div_id": root,
            "layer": None if layers is None else layer_ids[0],
            "heads": None,
            "include_layers": layer_ids,  # explicit, per kind: a decoder may have fewer layers
        }
        title = "Head view" + ("" if len(group) > 1 or group[0].kind == "self" else f" ({group[0].name})")
        body = (
            f'<div class="attn-view" data-view="head_view" data-renderer="svg"><h3>{escape(title)}</h3>'
            f'{json_block(pid, params)}<div id="{root}" style="{_FONT}"><span style="user-select:none">'
            f'Layer: <select id="layer"></select> {_filter_select(group)}</span><div id="vis"></div></div></div>'
        )
        rows = max(max(len(s.left), len(s.right)) for s in group)
        fragments.append(
            Fragment(
                body,
                [bertviz_script("head_view", pid, root)],
                libraries=True,
                height=int(rows * 22.5 + 110),
                data=blocks,
            )
        )
    return HeadView(fragments, "Head view")


def model_view(
    record: AttentionRecord,
    *,
    kind: Sequence[str] | str | None = None,
    layers: Selection = None,
    heads: Selection = None,
    display_mode: str = "light",
    prettify_tokens: bool = True,
    renderer: str = "auto",
    threshold: float = DEFAULT_THRESHOLD,
) -> ModelView:
    """Every chosen layer and head at once as thumbnails; click one to enlarge it."""
    record = check_record(record)
    threshold = check_threshold(threshold)
    if display_mode not in ("light", "dark"):
        raise InputError(f"display_mode must be 'light' or 'dark', got {display_mode!r}")
    secs = sections(record, kind, layers, heads, prettify_tokens)
    lines = max(int(s.attn.numel()) for s in secs)
    if _renderer(renderer, lines, MODEL_SVG_LIMIT) == "canvas":
        return ModelView([_canvas_fragment(secs, "model", threshold, "Model view")], "Model view")
    fragments = []
    for group in _groups(secs):
        root, pid = new_id("bertviz"), new_id("attn-params")
        blocks: dict[str, dict] = {}
        params = {
            "attention": _bertviz_data(group, threshold, blocks),
            "default_filter": "0",
            "display_mode": display_mode,
            "root_div_id": root,
            "include_layers": group[0].layers,
            "include_heads": group[0].heads,
            "total_heads": int(record.attentions[group[0].kind].shape[1]),
        }
        title = "Model view" + ("" if len(group) > 1 or group[0].kind == "self" else f" ({group[0].name})")
        body = (
            f'<div class="attn-view" data-view="model_view" data-renderer="svg"><h3>{escape(title)}</h3>'
            f'{json_block(pid, params)}<div id="{root}" style="{_FONT}"><span style="user-select:none">'
            f'{_filter_select(group)}</span><div id="vis"></div></div></div>'
        )
        n_layers = int(group[0].attn.shape[0])
        fragments.append(
            Fragment(
                body,
                [bertviz_script("model_view", pid, root)],
                libraries=True,
                height=n_layers * 100 + 140,
                data=blocks,
            )
        )
    return ModelView(fragments, "Model view")


def neuron_view(
    record: AttentionRecord,
    *,
    kind: Sequence[str] | str | None = None,
    layers: Selection = None,
    heads: Selection = None,
    display_mode: str = "light",
    prettify_tokens: bool = True,
    threshold: float = DEFAULT_THRESHOLD,
) -> NeuronView:
    """How queries and keys produce each weight, for any record holding query and key vectors.

    ``layers`` and ``heads`` choose what the menus offer (the first chosen is shown first).
    """
    record = check_record(record)
    threshold = check_threshold(threshold)
    if display_mode not in ("light", "dark"):
        raise InputError(f"display_mode must be 'light' or 'dark', got {display_mode!r}")
    if kind is None:
        kind = [k for k in record.kinds if k in record.queries and k in record.keys]
        if not kind:
            raise MissingCaptureError(
                "the neuron view needs query and key vectors; capture them with ap.capture(..., qk=True) "
                "or set record.queries / record.keys"
            )
    fragments = []
    for sec in sections(record, kind, layers, heads, prettify_tokens):
        if sec.kind not in record.queries or sec.kind not in record.keys:
            raise MissingCaptureError(
                f"the record has no query/key vectors for {sec.kind!r} attention (capture qk=True)"
            )
        li, hi = torch.tensor(sec.layer_positions), torch.tensor(sec.head_positions)
        queries = record.queries[sec.kind].index_select(0, li).index_select(1, hi)
        keys = record.keys[sec.kind].index_select(0, li).index_select(1, hi)
        lines = int(sec.attn.shape[2] * sec.attn.shape[3])
        if lines > HEAD_SVG_LIMIT:
            # The neuron view has no canvas form: one SVG line per weight of a head would hang the page.
            raise InputError(
                f"the neuron view of {sec.kind!r} attention would draw {lines} SVG lines (limit {HEAD_SVG_LIMIT}); "
                "use a shorter input, or head_view/heatmap, which switch to canvas"
            )
        root, pid = new_id("bertviz"), new_id("attn-params")
        blocks: dict[str, dict] = {}
        data = {
            "attn": reference(encode_weights(sec.attn, threshold), blocks),
            "left_text": sec.left,
            "right_text": sec.right,
            "queries": reference(encode_floats(queries), blocks),
            "keys": reference(encode_floats(keys), blocks),
        }
        params = {
            "attention": {"all": data},
            "default_filter": "all",
            "root_div_id": root,
            "bidirectional": not record.is_causal(sec.kind),
            "display_mode": display_mode,
            "layer": 0,
            "head": None if heads is None else 0,
        }
        title = "Neuron view" + ("" if sec.kind == "self" else f" ({sec.name})")
        body = (
            f'<div class="attn-view" data-view="neuron_view" data-renderer="svg"><h3>{escape(title)}</h3>'
            f'{json_block(pid, params)}<div id="{root}" style="padding:8px;{_FONT}"><span style="user-select:none">'
            '<span class="dropdown-label">Layer: </span><select id="layer"></select> '
            '<span class="dropdown-label">Head: </span><select id="att_head"></select></span>'
            '<div id="vis"></div></div></div>'
        )
        rows = max(len(sec.left), len(sec.right))
        fragments.append(
            Fragment(
                body,
                [bertviz_script("neuron_view", pid, root)],
                libraries=True,
                height=int(rows * 22 + 200),
                data=blocks,
            )
        )
    return NeuronView(fragments, "Neuron view")
