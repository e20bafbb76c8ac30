"""Forward-equivalents of one method capture: what the faithfulness benchmarks count as cost."""

from __future__ import annotations

from typing import Any


def record_cost(method: Any, record: Any) -> float:
    """Forward-equivalents one capture of ``method`` cost: forwards + 2 × backwards (+ a decomposition's work)."""
    meta = record.meta
    forwards = float(meta.get("forward_passes", getattr(method, "forward_passes", 1)))
    backwards = float(meta.get("backward_passes", 1 if "gradients" in getattr(method, "requires", ()) else 0))
    own = meta.get(getattr(method, "name", ""), {})
    if isinstance(own, dict) and "forward_equivalents" in own:
        return float(own["forward_equivalents"])
    return forwards + 2 * backwards
