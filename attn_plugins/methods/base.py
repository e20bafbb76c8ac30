"""The method contract: what every attribution method takes, reads, captures and returns."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from ..errors import InputError, MissingCaptureError, UnsupportedModelError
from ..record import AttentionRecord, Position, Selection, choose
from ..record.selection import check_reduction, position_rows, row_weights

# How to obtain each optional record field, for MissingCaptureError messages.
CAPTURE_HINTS = {
    "gradients": "ap.capture(..., gradients=True, gradient_target=...)",
    "value_norms": "ap.capture(..., value_norms=True) (the 'huggingface' AttentionInterface adapter)",
    "values": "ap.capture(..., values=True)",
}
# The capture option that provides each optional record field.
CAPTURE_OPTIONS = {"gradients": "gradients", "value_norms": "value_norms", "values": "values", "queries": "qk"}


class Method:
    """Base class of attribution methods over attention records: the contract every method follows.

    **Call.** ``method(record, position="first", *, layers=None, heads=None, head_reduce="mean",
    kind=None, **options)`` returns scores over the key tokens of ``kind``: ``[keys]`` for one query
    position, ``[rows, keys]`` for several. The words mean the same for every method
    (:mod:`attn_plugins.record.selection`):

    * ``position`` - the explained query row(s): ``"first"``, ``"last"``, ``"mean"``, ``"generated"``,
      an index, a list of indices, or row weights (floats, one per query row: the weighted sum of rows);
    * ``layers`` / ``heads`` - original layer and head numbers to use (``None``: all);
    * ``head_reduce`` - how the chosen heads are combined: ``"mean"``, ``"max"``, ``"min"`` or ``"sum"``;
      layers are then combined by the method's own rule (a mean, a product, a flow, ...);
    * ``kind`` - the attention kind (``None``: cross attention when the record has it and the method is
      defined on it, else the record's default kind).

    A method that cannot honour a word (ALTI combines every head itself) raises :class:`InputError`.

    **Pooled targets.** A target that pools every row (a mean-pooled sentence embedding) is explained with
    row weights ``w`` (:func:`attn_plugins.explain.targets.row_weights`, each row's share of the output;
    :attr:`pooled_rows` may ask for ``"mean"`` or ``"first"`` instead). Every row-wise method, built-in or a
    plugin's own ``__call__``, answers them with one vector over keys, the weighted sum of its rows'
    scores ``Σ_i w_i · scores[i]``. A plugin's ``__call__`` is asked for ``position="all"`` (``[rows, keys]``)
    and the package forms the sum (:class:`~attn_plugins.methods.GuardedMethod`), so a plugin needs only
    the named positions. A method that explains the target itself (:class:`TargetMethod`) has no rows to
    weigh and ignores ``w``.

    **Reads.** ``requires`` names the optional record fields the method reads (``"gradients"``,
    ``"value_norms"``, ``"extras:<key>"``); :meth:`capture_options` turns them into ``ap.capture``
    arguments and :meth:`capture` captures a record that has them, so explainers never special-case a
    method by name. Given a list of texts, :meth:`capture` returns one record per text from one padded
    forward, which explainers use to explain many texts at once. A method that needs more than one
    forward (ALTI) overrides :meth:`capture` and sets ``batch_capture = False`` unless it takes lists too.

    **Implements.** :meth:`matrix`: token-by-token scores ``[queries, keys]`` with the selection already
    resolved to positions in the record. A method whose rows are costly one by one (flow) overrides
    :meth:`rows` to compute only the rows asked for. A method that explains the captured target itself
    rather than query rows (LRP, output decompositions) subclasses :class:`TargetMethod`.
    """

    name: str = "method"
    requires: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ("self", "encoder", "decoder", "cross")
    description: str = ""
    # Model forwards one :meth:`capture` costs per text (for cost reports; a batch of n costs n passes' work);
    # a capture that knows better writes record.meta["forward_passes"].
    forward_passes: int = 1
    # Whether :meth:`capture` takes a list of texts (one record each, one padded forward for the list).
    batch_capture: bool = True
    # True when the scores explain the gradient target given to capture() (one capture per explained
    # output) rather than query rows of the attention.
    explains_target: bool = False
    # Whether :meth:`capture` explains a list of texts with one gradient target, the sum of each text's own
    # (:class:`~attn_plugins.adapters.BatchTarget`): one padded forward and one backward for the list, each
    # record holding what its text gets alone. The base capture does (gradients of a batch are per text).
    batch_targets: bool = True
    # How an explainer reads the query rows for a target that pools every row (a mean-pooled sentence
    # embedding): "weighted" (each row by its share of the output, explain.targets.row_weights), "mean"
    # or "first". The defaults come from the faithfulness benchmark (docs/faithfulness.md).
    pooled_rows: str = "weighted"

    # ------------------------------------------------------------------ the call
    def __call__(
        self,
        record: AttentionRecord,
        position: Position = "first",
        *,
        layers: Selection = None,
        heads: Selection = None,
        head_reduce: str = "mean",
        kind: str | None = None,
        **options: Any,
    ) -> np.ndarray:
        """Scores over key tokens for the query ``position`` (see the class docstring)."""
        kind = self.resolve_kind(record, kind)
        self.check_options(options)
        att = record.check_attention(kind)  # a finite rank-4 tensor over the record's tokens, or an error naming it
        li = choose(layers, record.layer_ids(kind), "layer")
        hi = choose(heads, record.head_ids(kind), "head")
        check_reduction(head_reduce)
        rows, how = position_rows(position, int(att.shape[2]), record, kind)
        picked = self.rows(record, rows, kind=kind, layers=li, heads=hi, head_reduce=head_reduce, **options)
        picked = np.asarray(picked, dtype=np.float64)
        if picked.shape != (len(rows), att.shape[3]):
            raise InputError(
                f"method {self.name!r} gave scores of shape {picked.shape} for {len(rows)} rows over "
                f"{att.shape[3]} keys"
            )
        if not np.isfinite(picked).all():
            raise InputError(f"method {self.name!r} gave non-finite scores on this record")
        if how == "mean":
            return picked.mean(0)
        if how == "weighted":
            return row_weights(position, len(rows)) @ picked
        return picked[0] if how == "one" else picked

    def rows(
        self,
        record: AttentionRecord,
        rows: np.ndarray,
        *,
        kind: str,
        layers: list[int],
        heads: list[int],
        head_reduce: str,
        **options: Any,
    ) -> np.ndarray:
        """Scores ``[len(rows), keys]`` for the query ``rows`` (default: those rows of :meth:`matrix`)."""
        m = self.matrix(record, kind=kind, layers=layers, heads=heads, head_reduce=head_reduce, **options)
        return m[rows]

    def matrix(
        self,
        record: AttentionRecord,
        *,
        kind: str,
        layers: list[int],
        heads: list[int],
        head_reduce: str,
        **options: Any,
    ) -> np.ndarray:
        """Token-by-token scores ``[queries, keys]``; ``layers`` and ``heads`` are positions in the record."""
        raise InputError(f"method {self.name!r} defines no token-by-token matrix")

    # ------------------------------------------------------------------ which models it explains
    def check_support(self, model: Any, tokenizer: Any = None) -> None:
        """UnsupportedModelError (or InputError) saying why this method cannot explain ``model`` with
        ``tokenizer``; checked from the model's modules and configuration, without a forward.

        The default accepts every model (attention is read from any capture); a method with its own rules
        or layer code overrides it. Explainers use it to pick the most faithful method that runs
        (:mod:`attn_plugins.explain.defaults`).
        """

    def supports(self, model: Any, tokenizer: Any = None) -> bool:
        """Whether :meth:`check_support` accepts ``model``."""
        try:
            self.check_support(model, tokenizer)
        except (UnsupportedModelError, InputError):
            return False
        return True

    # ------------------------------------------------------------------ what it reads
    def capture_options(self) -> dict[str, Any]:
        """The ``ap.capture`` arguments that give a record with everything :attr:`requires` names."""
        return {CAPTURE_OPTIONS[f]: True for f in self.requires if f in CAPTURE_OPTIONS}

    def capture(
        self,
        model: Any,
        tokenizer: Any = None,
        text: Any = None,
        *,
        inputs: Any = None,
        gradient_target: Any = None,
        **options: Any,
    ) -> Any:
        """A record (or a list, for a batch) this method can read: ``ap.capture`` with :meth:`capture_options`."""
        from ..capture import capture

        opts = {**self.capture_options(), **options}
        if opts.get("gradients"):
            opts["gradient_target"] = gradient_target
        return capture(model, tokenizer, text, inputs=inputs, **opts)

    # ------------------------------------------------------------------ helpers for subclasses
    def check_options(self, options: dict[str, Any]) -> None:
        """InputError naming the method's options when ``options`` holds one it does not take."""
        params = inspect.signature(self.scores if isinstance(self, TargetMethod) else self.matrix).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        known = [n for n in params if n not in ("self", "record", "kind", "layers", "heads", "head_reduce")]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise InputError(
                f"method {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options are layers, heads, head_reduce, kind{''.join(', ' + k for k in known)}"
            )

    def resolve_kind(self, record: AttentionRecord, kind: str | None) -> str:
        """The kind to use: the one asked for, else cross attention when present, else the record's default."""
        if not isinstance(record, AttentionRecord):
            raise InputError(f"method {self.name!r} needs an AttentionRecord, got {type(record).__name__}")
        if kind is None:
            kind = "cross" if "cross" in record.attentions and "cross" in self.kinds else record.default_kind
        if kind not in record.attentions:
            raise InputError(f"the record has no {kind!r} attention; it holds {', '.join(record.kinds)}")
        if kind not in self.kinds:
            raise InputError(f"method {self.name!r} is defined on {', '.join(self.kinds)} attention, not {kind!r}")
        return kind

    def require(self, record: AttentionRecord, field: str, kind: str) -> torch.Tensor:
        """The optional per-kind tensor ``field`` of ``kind``, or MissingCaptureError naming the capture option."""
        store = getattr(record, field)
        if not isinstance(store, dict) or kind not in store:
            hint = CAPTURE_HINTS.get(field, f"capture with {field}=True")
            raise MissingCaptureError(
                f"method {self.name!r} needs record.{field}[{kind!r}], which this record lacks; capture with {hint}"
            )
        # Checked like the attention: the shape it must have against the tokens, and finite values.
        return record.check_tensor(field, kind).detach().to(torch.float64)

    def info(self) -> dict[str, Any]:
        """Name, requirements and kinds, for listings."""
        return {"name": self.name, "requires": list(self.requires), "kinds": list(self.kinds)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class TargetMethod(Method):
    """A method whose scores explain the target it was captured with: one score vector per record.

    LRP and output decompositions propagate the explained output (a class logit, a similarity) back to
    the input tokens, so their scores do not belong to query rows: ``position`` is checked but selects
    nothing (every row would be the same vector; ``"all"`` or a list of rows repeats it), and layers and
    heads cannot be chosen. The explained output is the ``gradient_target`` given to :meth:`capture`.

    **Implements.** :meth:`scores`: the score vector over key tokens read from the record.
    """

    explains_target = True
    batch_capture = False  # one capture per explained output
    batch_targets = False  # unless the method's capture takes a list with a BatchTarget (LRP does)

    def __call__(
        self,
        record: AttentionRecord,
        position: Position = "first",
        *,
        layers: Selection = None,
        heads: Selection = None,
        head_reduce: str = "mean",
        kind: str | None = None,
        **options: Any,
    ) -> np.ndarray:
        """The record's score vector (see the class docstring); ``[rows, keys]`` when several rows are asked for."""
        kind = self.resolve_kind(record, kind)
        self.check_options(options)
        if layers is not None or heads is not None or head_reduce != "mean":
            raise InputError(
                f"method {self.name!r} explains the captured output through every layer and head; "
                "leave layers=, heads= and head_reduce= unset"
            )
        rows, how = position_rows(position, int(record.attentions[kind].shape[2]), record, kind)
        scores = np.asarray(self.scores(record, kind=kind, **options), dtype=np.float64)
        if not np.isfinite(scores).all():
            raise InputError(f"method {self.name!r} gave non-finite scores on this record")
        return np.tile(scores, (len(rows), 1)) if how == "many" else scores

    def scores(self, record: AttentionRecord, *, kind: str, **options: Any) -> np.ndarray:
        """Scores over the key tokens of ``kind``, read from what :meth:`capture` stored in the record."""
        raise InputError(f"method {self.name!r} defines no scores")


def attention(record: AttentionRecord, kind: str, layers: list[int] | None = None) -> torch.Tensor:
    """The attention of ``kind`` as float64 ``[L, H, Q, K]`` (float64 keeps long products exact enough).

    ``layers`` (positions in the record) keeps only those layers, in the order given.
    """
    att = record.attentions[kind].detach().to(torch.float64)
    return att if layers is None else layers_of(att, layers)


def sink_share(record: AttentionRecord, kind: str, layers: list[int] | None = None) -> torch.Tensor | None:
    """The learned sinks' share of each row as float64 ``[L, H, Q]`` (None without sinks): mass no token gets."""
    sink = record.sink_mass.get(kind)
    if sink is None:
        return None
    sink = sink.detach().to(torch.float64)
    return sink if layers is None else layers_of(sink, layers)


def bottom_up(record: AttentionRecord, kind: str, layers: list[int]) -> list[int]:
    """Layer positions ordered by their original layer number: products through layers run first to last."""
    ids = record.layer_ids(kind)
    return sorted(layers, key=lambda position: ids[position])


def layers_of(t: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """``t`` ``[L, ...]`` with only the layers at positions ``layers``, in that order."""
    return t.index_select(0, torch.tensor(layers, dtype=torch.long))


def heads_of(t: torch.Tensor, heads: list[int]) -> torch.Tensor:
    """``t`` ``[L, H, ...]`` with only the heads at positions ``heads``."""
    return t.index_select(1, torch.tensor(heads, dtype=torch.long))


def square(att: torch.Tensor, kind: str, method: str) -> None:
    """Propagation through layers needs queries == keys; a generation suffix record does not have it."""
    if att.shape[-2] != att.shape[-1]:
        raise InputError(
            f"method {method!r} propagates through layers and needs as many queries as keys; the {kind!r} "
            f"attention is {att.shape[-2]}x{att.shape[-1]} (capture the full sequence, not a generation suffix)"
        )


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """Detach a tensor to a float64 NumPy array."""
    return t.detach().to(torch.float64).cpu().numpy()
