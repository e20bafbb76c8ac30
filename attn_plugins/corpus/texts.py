"""The input of a corpus run: a JSON Lines file of ``{"text": ..., "id": ...}`` on a local path or any
filesystem pyarrow reads (``s3://``, ``gs://``, ``hdfs://``, ``file://``); the same rules whichever engine reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError


@dataclass
class Example:
    """One text of the input file: its id (given, or the line number), text and line number."""

    id: str
    text: str
    line: int

    @property
    def text_sha1(self) -> str:
        """The text's digest: a resumed run refuses an id whose text changed."""
        return text_sha1(self.text)


def text_sha1(text: str) -> str:
    """sha1 of a text's UTF-8 bytes."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def is_uri(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` inputs, read through pyarrow's filesystems."""
    return "://" in os.fspath(path)


def input_location(path: str | os.PathLike) -> str:
    """The input as every worker can name it: an absolute local path, or the URI unchanged."""
    if is_uri(path):
        return os.fspath(path)
    return str(Path(path).expanduser().resolve())


_FOLDER = (
    "{path}: is a folder; a corpus run reads one JSON Lines file, whose ids are unique "
    "(join the files first, e.g. `cat {path}/*.jsonl > all.jsonl`, giving each text an id of its own)"
)


def check_input(path: str | os.PathLike) -> None:
    """Refuse an input that does not exist or is a folder (either engine reads exactly one file)."""
    if not is_uri(path):
        local = Path(path).expanduser()
        if local.is_dir():
            raise InputError(_FOLDER.format(path=os.fspath(path).rstrip("/")))
        if not local.is_file():
            raise InputError(f"{path}: no such file")
        return
    try:
        from pyarrow import fs
    except ImportError:
        raise InputError(f"{path}: reading a URI needs pyarrow (pip install 'attn-plugins[ray]')") from None
    try:
        filesystem, inner = fs.FileSystem.from_uri(os.fspath(path))
        kind = filesystem.get_file_info(inner).type
    except (OSError, ValueError) as exc:  # an unknown scheme, no credentials, an unreachable store
        raise InputError(f"{path}: cannot read it ({str(exc).splitlines()[0]})") from None
    if kind == fs.FileType.Directory:
        raise InputError(_FOLDER.format(path=os.fspath(path).rstrip("/")))
    if kind == fs.FileType.NotFound:
        raise InputError(f"{path}: no such file")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole input file, from a local path or a pyarrow filesystem URI."""
    check_input(path)
    if not is_uri(path):
        return Path(path).expanduser().read_bytes()
    try:
        from pyarrow import fs
    except ImportError:
        raise InputError(f"{path}: reading a URI needs pyarrow (pip install 'attn-plugins[ray]')") from None
    try:
        filesystem, inner = fs.FileSystem.from_uri(os.fspath(path))
        with filesystem.open_input_stream(inner) as stream:
            return stream.read()
    except (OSError, ValueError) as exc:  # pyarrow: ArrowInvalid is a ValueError, missing files an OSError
        raise InputError(f"{path}: cannot read it ({str(exc).splitlines()[0]})") from None


def _lone_surrogate(value: str) -> int | None:
    """The position of the first unpaired surrogate in ``value`` (JSON escapes allow them), else None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def parse_lines(data: bytes, source: str) -> Iterator[Example]:
    """The examples of a JSON Lines file's bytes; a bad line raises InputError naming ``source`` and the line."""
    seen: dict[str, int] = {}
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue  # blank lines (a trailing newline) carry nothing
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{source}:{n}: not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
            ) from None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{source}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f'{source}:{n}: expected an object like {{"text": "..."}}, got {type(obj).__name__}')
        text = obj.get("text")
        if not isinstance(text, str):
            raise InputError(f'{source}:{n}: needs a "text" string')
        if not text.strip():
            raise InputError(f"{source}:{n}: the text is empty; there is nothing to explain")
        raw_id = obj.get("id", n)
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
            raise InputError(f'{source}:{n}: "id" must be a string or an integer')
        key = str(raw_id)
        for what, value in (("id", key), ("text", text)):
            bad = _lone_surrogate(value)
            if bad is not None:
                # Valid JSON (a "\\ud800" escape) but no Unicode text: it could not be hashed or written back.
                raise InputError(
                    f"{source}:{n}: the {what} holds a lone surrogate (\\u{ord(value[bad]):04x} at character "
                    f"{bad + 1}), which is not a character; fix the escape"
                )
        if key in seen:
            raise InputError(f"{source}:{n}: id {key!r} was already used on line {seen[key]}")
        seen[key] = n
        yield Example(key, text, n)


def read_texts(path: str | os.PathLike) -> list[Example]:
    """Read ``{"text": ..., "id": ...}`` lines (id optional: the line number); bad lines raise InputError."""
    examples = list(parse_lines(read_bytes(path), os.fspath(path)))
    if not examples:
        raise InputError(f"{path}: holds no texts")
    return examples
