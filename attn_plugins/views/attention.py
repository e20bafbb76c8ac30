"""head_view, model_view and neuron_view of any AttentionRecord: bertviz's front ends, or canvas for long inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError, MissingCaptureError
from ..record import KINDS, AttentionRecord
from .bertviz_js import bertviz_script
from .page import Fragment, View, escape, json_block, new_id
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


def prettify(tokens: Sequence[str]) -> list[str]:
    """Tokens without sub-word markers, the way bertviz shows them (Ġ and ▁ become spaces)."""
    return [t.replace("Ġ", " ").replace("▁", " ").replace("</w>", "") for t in tokens]


def check_record(record: object) -> AttentionRecord:
    """``record`` validated as an AttentionRecord; anything else is a clear error."""
    if not isinstance(record, AttentionRecord):
        raise InputError(f"views draw an AttentionRecord, got {type(record).__name__}")
    return record.validate()


def _check_kinds(record: AttentionRecord, kinds: Sequence[str] | str | None) -> list[str]:
    if kinds is None:
        return record.kinds
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    for kind in kinds:
        if kind not in KINDS:
            raise InputError(f"unknown attention kind {kind!r}; kinds are {', '.join(KINDS)}")
        if kind not in record.attentions:
            raise InputError(f"the record has no {kind!r} attention; it holds {', '.join(record.kinds)}")
    if not kinds:
        raise InputError("kinds is empty: choose at least one attention kind")
    return kinds


def _positions(wanted: Sequence[int] | None, available: list[int], what: str, kind: str) -> list[int]:
    """Positions (in the record) of the wanted original layer/head numbers."""
    if wanted is None:
        return list(range(len(available)))
    wanted = list(wanted)
    if not wanted:
        raise InputError(f"include_{what} is empty")
    missing = [w for w in wanted if w not in available]
    if missing:
        hint = "" if kind == "self" else "; pass kinds= to draw only the kinds that have them"
        raise InputError(f"{kind!r} attention has no {what} {missing}; it holds {what} {available}{hint}")
    return [available.index(w) for w in wanted]


def sections(
    record: AttentionRecord,
    kinds: Sequence[str] | str | None = None,
    include_layers: Sequence[int] | None = None,
    include_heads: Sequence[int] | None = None,
    prettify_tokens: bool = True,
) -> list[Section]:
    """One section per attention kind, each with its own layer list (a decoder may have fewer layers)."""
    out = []
    for kind in _check_kinds(record, kinds):
        layer_ids, head_ids = record.layer_ids(kind), record.head_ids(kind)
        li = _positions(include_layers, layer_ids, "layers", kind)
        hi = _positions(include_heads, head_ids, "heads", kind)
        att = record.attentions[kind].index_select(0, torch.tensor(li)).index_select(1, torch.tensor(hi))
        left, right = record.axes(kind)
        if prettify_tokens:
            left, right = prettify(left), prettify(right)
        out.append(
            Section(
                kind,
                _KIND_NAMES[kind],
                att,
                list(left),
                list(right),
                [layer_ids[i] for i in li],
                [head_ids[i] for i in hi],
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
    kinds: Sequence[str] | str | None = None,
    layer: int | None = None,
    heads: Sequence[int] | None = None,
    include_layers: Sequence[int] | None = None,
    prettify_tokens: bool = True,
    renderer: str = "auto",
    threshold: float = DEFAULT_THRESHOLD,
) -> HeadView:
    """Attention between tokens for one layer, every head in its colour; encoder/decoder/cross for seq2seq.

    Layers and heads are named by their original numbers (``record.layer_ids(kind)``). Above
    ``HEAD_SVG_LIMIT`` lines per layer (or with ``renderer="canvas"``) a canvas heatmap is drawn instead.
    """
    record = check_record(record)
    threshold = check_threshold(threshold)
    secs = sections(record, kinds, include_layers, None, prettify_tokens)
    lines = max(int(s.attn.shape[1] * s.attn.shape[2] * s.attn.shape[3]) for s in secs)
    if _renderer(renderer, lines, HEAD_SVG_LIMIT) == "canvas":
        first = secs[0]
        layer_pos = 0 if layer is None else _positions([layer], first.layers, "layers", first.kind)[0]
        # The canvas shows one head or the mean of all: a single chosen head is shown, several mean all.
        head_pos = -1
        if heads is not None:
            chosen = _positions(heads, first.heads, "heads", first.kind)
            head_pos = chosen[0] if len(chosen) == 1 else -1
        return HeadView([_canvas_fragment(secs, "head", threshold, "Head view", layer_pos, head_pos)], "Head view")
    fragments = []
    for group in _groups(secs):
        layer_ids = group[0].layers
        if layer is not None and layer not in layer_ids:
            raise InputError(f"layer {layer} is not among the drawn layers {layer_ids}")
        # bertviz selects heads by position; users name them by their original numbers.
        head_pos = None if heads is None else _positions(heads, group[0].heads, "heads", group[0].kind)
        root, pid = new_id("bertviz"), new_id("attn-params")
        blocks: dict[str, dict] = {}
        params = {
            "attention": _bertviz_data(group, threshold, blocks),
            "default_filter": "0",
            "root_div_id": root,
            "layer": layer,
            "heads": head_pos,
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
    kinds: Sequence[str] | str | None = None,
    include_layers: Sequence[int] | None = None,
    include_heads: Sequence[int] | None = None,
    display_mode: str = "light",
    prettify_tokens: bool = True,
    renderer: str = "auto",
    threshold: float = DEFAULT_THRESHOLD,
) -> ModelView:
    """Every layer and head at once as thumbnails; click one to enlarge it."""
    record = check_record(record)
    threshold = check_threshold(threshold)
    if display_mode not in ("light", "dark"):
        raise InputError(f"display_mode must be 'light' or 'dark', got {display_mode!r}")
    secs = sections(record, kinds, include_layers, include_heads, prettify_tokens)
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
    kinds: Sequence[str] | str | None = None,
    layer: int | None = None,
    head: int | None = None,
    display_mode: str = "light",
    prettify_tokens: bool = True,
    threshold: float = DEFAULT_THRESHOLD,
) -> NeuronView:
    """How queries and keys produce each weight, for any record holding query and key vectors."""
    record = check_record(record)
    threshold = check_threshold(threshold)
    if display_mode not in ("light", "dark"):
        raise InputError(f"display_mode must be 'light' or 'dark', got {display_mode!r}")
    if kinds is None:
        kinds = [k for k in record.kinds if k in record.queries and k in record.keys]
        if not kinds:
            raise MissingCaptureError(
                "the neuron view needs query and key vectors; capture them with ap.capture(..., qk=True) "
                "or set record.queries / record.keys"
            )
    fragments = []
    for sec in sections(record, kinds, None, None, prettify_tokens):
        if sec.kind not in record.queries or sec.kind not in record.keys:
            raise MissingCaptureError(
                f"the record has no query/key vectors for {sec.kind!r} attention (capture qk=True)"
            )
        layer_pos = 0
        if layer is not None:
            if layer not in sec.layers:
                raise InputError(f"layer {layer} is not among the {sec.kind!r} layers {sec.layers}")
            layer_pos = sec.layers.index(layer)
        head_pos = None if head is None else _positions([head], sec.heads, "heads", sec.kind)[0]
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
            "queries": reference(encode_floats(record.queries[sec.kind]), blocks),
            "keys": reference(encode_floats(record.keys[sec.kind]), blocks),
        }
        params = {
            "attention": {"all": data},
            "default_filter": "all",
            "root_div_id": root,
            "bidirectional": not record.is_causal(sec.kind),
            "display_mode": display_mode,
            "layer": layer_pos,
            "head": head_pos,
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
