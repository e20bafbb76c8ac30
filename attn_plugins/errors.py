"""Exceptions raised by attn-plugins: one class per kind of user mistake."""

from __future__ import annotations


class AttnPluginsError(Exception):
    """Base class of every error attn-plugins raises on purpose."""


class RecordValidationError(AttnPluginsError, ValueError):
    """An AttentionRecord's fields are inconsistent; ``field`` names the culprit."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class RecordFormatError(AttnPluginsError, ValueError):
    """A saved record cannot be read: truncated, corrupted, or of an unknown schema."""


class PluginError(AttnPluginsError):
    """A plugin or component cannot be found, or two plugins clash."""


class UnsupportedModelError(AttnPluginsError, TypeError):
    """No adapter can capture attention from this model."""


class InputError(AttnPluginsError, ValueError):
    """The text or tokenized input cannot be processed (empty, too long, wrong shape)."""


class OutputError(AttnPluginsError, OSError):
    """An output file or directory cannot be written (a directory in the way, a missing parent, no permission)."""


class MissingCaptureError(AttnPluginsError, ValueError):
    """A method needs data the record does not hold; the message names the capture option."""


class CorpusError(AttnPluginsError):
    """Examples of a corpus run failed; the run went on, and each failure is recorded in its directory.

    ``summary`` is the run's summary (what :func:`~attn_plugins.corpus.run_corpus` would have returned) and
    ``failures`` the failed examples (``id``, ``line``, ``error``).
    """

    def __init__(self, message: str, summary: dict | None = None, failures: list | None = None):
        super().__init__(message)
        self.summary = summary or {}
        self.failures = failures or []


class DeviceMemoryError(AttnPluginsError, MemoryError):
    """One example does not fit in the device's memory even alone (a batch that does not fit is split first)."""
