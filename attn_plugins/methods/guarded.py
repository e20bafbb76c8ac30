"""Third-party methods behind the package's checks: a plugin's failure is one PluginError that names it.

A method a plugin registers is called through :class:`GuardedMethod`: the record is checked before the
call (as for built-in methods), and an exception from the plugin, or a result that is not one finite
score per key token for the rows asked for, becomes a :class:`PluginError` naming the method, its plugin
and its distribution. Errors of the package's own (a bad layer number, a missing capture) pass unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import AttnPluginsError, PluginError
from ..record import AttentionRecord, Position, Selection
from ..record.selection import position_rows, row_weights
from .base import Method


class GuardedMethod(Method):
    """A registered third-party method (``component``) called with the package's checks around it."""

    def __init__(self, component: Any, blame: str) -> None:
        self.component = component
        self.blame = blame  # e.g. "method 'x' of plugin 'p' (distribution 'd')"
        self.name = str(getattr(component, "name", None) or type(component).__name__)
        self.requires = tuple(getattr(component, "requires", ()) or ())
        self.kinds = tuple(getattr(component, "kinds", None) or Method.kinds)
        self.forward_passes = int(getattr(component, "forward_passes", 1) or 1)
        # A plugin's own capture takes lists only when it says so; a plain callable gets the base capture.
        self.batch_capture = bool(getattr(component, "batch_capture", True)) if isinstance(component, Method) else True
        # How explainers read the plugin's scores (its declarations, else the contract's defaults).
        self.explains_target = bool(getattr(component, "explains_target", False))
        # A plugin's own capture explains a list with a batch target only when it says so.
        self.batch_targets = bool(getattr(component, "batch_targets", False)) if isinstance(component, Method) else True
        self.pooled_rows = getattr(component, "pooled_rows", Method.pooled_rows)
        self.description = str(getattr(component, "description", "") or "")

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
        """The plugin's scores, checked: one finite score per key token of ``kind`` for each row asked for."""
        kind = self.resolve_kind(record, kind)
        att = record.check_attention(kind)
        rows, how = position_rows(position, int(att.shape[2]), record, kind)
        # Row weights (a pooled target) mean the weighted sum of the method's rows (see Method): the plugin is
        # asked for every row and the package weighs them, so a plugin needs only the named positions.
        weighted = how == "weighted" and not self.explains_target
        asked = "all" if weighted else position
        try:
            out = self.component(
                record, position=asked, layers=layers, heads=heads, head_reduce=head_reduce, kind=kind, **options
            )
        except AttnPluginsError:
            raise  # the plugin refused the input with the package's own words (a bad selection, a missing capture)
        except Exception as exc:
            raise PluginError(f"{self.blame} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
        keys = int(att.shape[3])
        if weighted:
            return row_weights(position, len(rows)) @ self.check_scores(out, (len(rows), keys))
        expected = (len(rows), keys) if how == "many" else (keys,)
        return self.check_scores(out, expected)

    def check_scores(self, out: Any, expected: tuple[int, ...]) -> np.ndarray:
        """``out`` as a float64 array of shape ``expected`` with finite values; else PluginError naming the plugin."""
        if out is None:
            raise PluginError(f"{self.blame} returned None instead of scores")
        try:
            scores = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"{self.blame} returned {type(out).__name__}, not numeric scores ({exc})") from None
        if scores.shape != expected:
            what = (
                f"{expected[0]} key tokens" if len(expected) == 1 else f"{expected[0]} rows x {expected[1]} key tokens"
            )
            raise PluginError(f"{self.blame} gave scores of shape {scores.shape} for {what}")
        if not np.isfinite(scores).all():
            raise PluginError(f"{self.blame} gave non-finite scores (NaN or infinity)")
        return scores

    def capture(self, model: Any, tokenizer: Any = None, text: Any = None, **options: Any) -> Any:
        """The plugin's own capture when it defines one (a Method subclass), else the base capture of ``requires``."""
        if not isinstance(self.component, Method):
            return super().capture(model, tokenizer, text, **options)
        try:
            return self.component.capture(model, tokenizer, text, **options)
        except AttnPluginsError:
            raise
        except Exception as exc:
            raise PluginError(f"{self.blame} failed to capture: {type(exc).__name__}: {_first_line(exc)}") from exc

    def capture_options(self) -> dict[str, Any]:
        """The plugin's capture options when it defines them, else those of its ``requires``."""
        if isinstance(self.component, Method):
            return self.component.capture_options()
        return super().capture_options()

    def __repr__(self) -> str:
        return f"GuardedMethod({self.blame})"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "(no message)"
