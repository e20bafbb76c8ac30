"""A misbehaving third-party plugin, registered in-process with ap.register_plugin.

Its methods follow the plugin call (``method(record, position=..., kind=..., **options)`` -> scores over
key tokens) but fail in the ways a real plugin can; its views return HTML with a script of their own,
or raise.
"""

from __future__ import annotations

import numpy as np

from attn_plugins import hookimpl

PLUGIN_NAME = "bad_plugin"
EVIL_HTML = '<div id="evil"><script>window.__pwned = 1;</script><b>plugin view</b></div>'


def _n(record, kind=None) -> int:
    return int(record.attentions[kind or record.default_kind].shape[-1])


class Raises:
    name = "bad_raises"

    def __call__(self, record, position="first", kind=None, **_):
        raise ValueError("the plugin exploded")


class ReturnsNone:
    name = "bad_none"

    def __call__(self, record, position="first", kind=None, **_):
        return None


class SevenScores:
    """Three scores too many."""

    name = "bad_seven"

    def __call__(self, record, position="first", kind=None, **_):
        return np.linspace(0.1, 0.7, _n(record, kind) + 3)


class NaNScores:
    """The right number of scores, one of them NaN."""

    name = "bad_nan"

    def __call__(self, record, position="first", kind=None, **_):
        scores = np.linspace(0.1, 0.9, _n(record, kind))
        scores[1] = np.nan
        return scores


class Page:
    def __init__(self, html: str) -> None:
        self.html = html

    def _repr_html_(self) -> str:
        return self.html


def evil_view(record, **_):
    return Page(EVIL_HTML)


def raising_view(record, **_):
    raise RuntimeError("the view plugin exploded")


def none_view(record, **_):
    return None


@hookimpl
def attn_plugins_register_methods(register):
    for cls in (Raises, ReturnsNone, SevenScores, NaNScores):
        register(cls.name, cls())


@hookimpl
def attn_plugins_register_views(register):
    register("bad_evil_view", evil_view)
    register("bad_raising_view", raising_view)
    register("bad_none_view", none_view)
