"""A batch that runs out of device memory is split in halves and retried, down to one example.

Every batched path (``ap.capture`` of a list of texts, the explainer's padded batches, hence ``ap.explain``,
``ap.compare`` and corpus runs) runs its batches through :func:`split_on_oom`. Examples in a padded batch do
not interact, so the halves give each example the scores the whole batch would have given it. One example
that does not fit alone is a :class:`~attn_plugins.errors.DeviceMemoryError` naming it. The splits of one
run are collected in a :class:`SplitLog` (:func:`split_scope`) and reported once, by a
:class:`BatchSplitWarning`, by the outermost scope.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from ..errors import DeviceMemoryError

__all__ = ["BatchSplitWarning", "SplitLog", "free_device_memory", "split_on_oom", "split_scope"]

T = TypeVar("T")
R = TypeVar("R")


class BatchSplitWarning(ResourceWarning):
    """Batches ran out of device memory and were split; the results are those of the unsplit batches."""


@dataclass
class SplitLog:
    """What splitting did during one run: batches split, and the smallest batch that fit after a split."""

    batches_split: int = 0
    smallest_batch: int | None = None

    def fitted(self, size: int) -> None:
        """A batch of ``size`` examples, cut from a split batch, ran."""
        self.smallest_batch = size if self.smallest_batch is None else min(self.smallest_batch, size)

    def to_dict(self) -> dict[str, int | None]:
        """``{"batches_split": n, "smallest_batch": m}`` (m None when nothing was split)."""
        return {"batches_split": self.batches_split, "smallest_batch": self.smallest_batch}

    def message(self) -> str:
        """The warning's text."""
        return (
            f"out of device memory: {self.batches_split} batch(es) split in halves and retried; the smallest "
            f"batch that fit held {self.smallest_batch} example(s). Results are those of the whole batches; a "
            "smaller batch_size avoids the failed tries"
        )


_ACTIVE: contextvars.ContextVar[SplitLog | None] = contextvars.ContextVar("attn_plugins_split_log", default=None)
_SPLITTING: contextvars.ContextVar[bool] = contextvars.ContextVar("attn_plugins_splitting", default=False)


@contextlib.contextmanager
def split_scope(warn: bool = True) -> Iterator[SplitLog]:
    """Collect the splits of one run; the outermost scope warns once on exit (``warn=False``: the caller reports).

    A scope opened inside another (``ap.capture`` called by the explainer) yields the outer log, so a run's
    splits are counted and reported once, wherever they happened.
    """
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer
        return
    log = SplitLog()
    token = _ACTIVE.set(log)
    try:
        yield log
    finally:
        _ACTIVE.reset(token)
    if warn and log.batches_split:
        warnings.warn(log.message(), BatchSplitWarning, stacklevel=3)


def free_device_memory() -> None:
    """Release what a failed try left: its tensors (collected) and CUDA's cached blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def split_on_oom(
    run: Callable[[list[T]], Sequence[R]],
    items: Sequence[T],
    describe: Callable[[T], str],
) -> list[R]:
    """``run(items)`` (one result per item); on ``torch.OutOfMemoryError`` the halves, recursively.

    ``describe(item)`` names one example for the error raised when it does not fit alone (which text,
    its length). Any other exception is raised as it is, without a retry. Called inside another
    ``split_on_oom``'s ``run``, it runs ``run(items)`` once: the outermost call splits.
    """
    if _SPLITTING.get():
        # Inside another split_on_oom (ap.capture under the explainer): the outer one splits, naming the
        # examples as its caller knows them.
        return list(run(list(items)))
    token = _SPLITTING.set(True)
    try:
        with split_scope() as log:
            return _run(run, list(items), describe, log, split=False)
    finally:
        _SPLITTING.reset(token)


def _run(
    run: Callable[[list[T]], Sequence[R]], items: list[T], describe: Callable[[T], str], log: SplitLog, split: bool
) -> list[R]:
    failed = False
    try:
        out = list(run(items))
    except torch.OutOfMemoryError as exc:
        # The finished frames of the failed try hold its activations: cleared, they can be freed now.
        traceback.clear_frames(exc.__traceback__)
        if len(items) == 1:
            free_device_memory()
            raise DeviceMemoryError(
                f"{describe(items[0])} does not fit in the device's memory even alone ({exc_line(exc)}); try a "
                "shorter max_length= (with truncation=True), a smaller model, or the CPU"
            ) from exc
        failed = True
    if not failed:
        if split:
            log.fitted(len(items))
        return out
    # Out of the except block: the failed try's exception is gone too.
    free_device_memory()
    log.batches_split += 1
    half = (len(items) + 1) // 2
    return _run(run, items[:half], describe, log, True) + _run(run, items[half:], describe, log, True)


def exc_line(exc: BaseException) -> str:
    """The first line of an exception's message (CUDA's run on with allocator advice)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
