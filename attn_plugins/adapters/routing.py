"""Captures of a shared model from several threads: per-thread routing and reference-counted installation.

An adapter that changes a model to capture it (switches its configs to another attention function,
attaches hooks) cannot do so per capture: two threads capturing the same model would save each other's
state as "previous", restore it too early, and read each other's attention. Instead:

* :func:`installed` applies a change the first time a capture of a model starts and undoes it when the
  last one ends (reference counted, under a lock). A change is named by a ``mode``; captures needing
  another mode wait until the model is free, so an eager switch and a dispatcher never overlap. A thread
  that already holds the model in another mode gets an error instead of waiting for itself.
* :func:`running` makes a capture the innermost one of the calling thread (a ``ContextVar``, so asyncio
  tasks are kept apart too); the installed function or hook asks :func:`active` which captures run in
  *its* thread and hands the call to them, and runs the model's own code when there are none. A thread
  that runs the model plainly while another captures it gets the model's own result.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ..errors import UnsupportedModelError

_ACTIVE: ContextVar[tuple[Any, ...]] = ContextVar("attn_plugins_active_captures", default=())


def active() -> tuple[Any, ...]:
    """The captures running in the calling thread (context), outermost first."""
    return _ACTIVE.get()


@contextmanager
def running(capture: Any) -> Iterator[None]:
    """Make ``capture`` the innermost capture of the calling thread (context) for the block."""
    token = _ACTIVE.set((*_ACTIVE.get(), capture))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class _Installation:
    """One model's installed change: its mode, how many captures use it, which threads, and how to undo it."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.count = 0
        self.undo: Callable[[], None] | None = None
        self.threads: dict[int, int] = {}


_LOCK = threading.Lock()
_FREE = threading.Condition(_LOCK)
_INSTALLED: weakref.WeakKeyDictionary[Any, _Installation] = weakref.WeakKeyDictionary()


@contextmanager
def installed(model: Any, mode: str, install: Callable[[], Callable[[], None]]) -> Iterator[None]:
    """Keep ``model`` changed by ``install()`` (which returns its undo) while at least one capture in ``mode`` runs.

    The first capture of the model installs, the last one to end undoes, also when a forward raised.
    Captures in another mode wait for the model to be free.
    """
    me = threading.get_ident()
    with _FREE:
        state = _INSTALLED.get(model)
        if state is None:
            state = _INSTALLED[model] = _Installation()
        while state.mode is not None and state.mode != mode:
            if me in state.threads:
                raise UnsupportedModelError(
                    f"{type(model).__name__} is already captured in this thread with {state.mode!r}; a capture "
                    f"needing {mode!r} cannot run inside it"
                )
            _FREE.wait()
        if state.count == 0:
            state.undo = install()  # under the lock: no other capture of this model sees it half done
            state.mode = mode
        state.count += 1
        state.threads[me] = state.threads.get(me, 0) + 1
    try:
        yield
    finally:
        with _FREE:
            state.count -= 1
            left = state.threads[me] - 1
            if left:
                state.threads[me] = left
            else:
                del state.threads[me]
            if state.count == 0:
                undo, state.undo, state.mode = state.undo, None, None
                try:
                    if undo is not None:
                        undo()
                finally:
                    _FREE.notify_all()


def installed_mode(model: Any) -> str | None:
    """The mode ``model`` is installed in by running captures (None: untouched)."""
    with _LOCK:
        state = _INSTALLED.get(model)
        return state.mode if state is not None else None
