"""The record layer: :class:`AttentionRecord`, the kind table, selection, head statistics and storage."""

from .kinds import KINDS, SIDES, SQUARE_KINDS, TENSOR_AXES, TENSOR_FIELDS
from .numbering import Selection, choose
from .record import SCHEMA_VERSION, AttentionRecord
from .selection import POSITIONS, REDUCTIONS, Position, reduce_axis, select_rows
from .storage import from_bytes, load, save, to_bytes

__all__ = [
    "KINDS",
    "POSITIONS",
    "REDUCTIONS",
    "SCHEMA_VERSION",
    "SIDES",
    "SQUARE_KINDS",
    "TENSOR_AXES",
    "TENSOR_FIELDS",
    "AttentionRecord",
    "Position",
    "Selection",
    "choose",
    "from_bytes",
    "load",
    "reduce_axis",
    "save",
    "select_rows",
    "to_bytes",
]
