"""Layer and head numbers: the one way to pick them (:func:`choose`), used by the record and by every selection.

Below :mod:`attn_plugins.record.record` (which numbers its stored layers and heads with it) and
:mod:`attn_plugins.record.selection` (query rows, which read a record): imports run one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError

Selection = int | Sequence[int] | None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def choose(wanted: Selection, available: int | Sequence[int], what: str) -> list[int]:
    """Positions of the ``wanted`` layers (or heads) among ``available``; all positions when ``wanted`` is None.

    ``available`` is a count ``n`` (numbers ``0 .. n-1``) or the list of original numbers a record holds.
    A number not available, or an empty selection, is an :class:`InputError` naming the valid range.
    """
    ids = list(range(available)) if _is_int(available) else [int(i) for i in available]
    n = len(ids)
    if wanted is None:
        return list(range(n))
    items = [wanted] if _is_int(wanted) else wanted
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence | np.ndarray | range):
        raise InputError(f"{what}s must be a number, a list of numbers or None, not {type(wanted).__name__}")
    items = list(items)
    if not items:
        raise InputError(f"the {what} selection is empty")
    valid = f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[0] + n)) and n else str(ids)
    out = []
    for w in items:
        if not _is_int(w):
            raise InputError(f"{what} {w!r} is not an integer")
        w = int(w)
        if w < 0 and -n <= w:
            out.append(n + w)
        elif w >= 0 and w in ids:
            out.append(ids.index(w))
        else:
            raise InputError(f"{what} {w} out of range: there are {n} {what}s ({valid}, or -{n}..-1 from the end)")
    return out
