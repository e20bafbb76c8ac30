"""The output directory of a corpus run, written the same way by every engine and every worker.

Layout of ``out_dir``:

* ``manifest.json`` - what the run is (model, method and options: a resumed run must match, so results of
  two setups never mix) and, after each run, its shards and counts;
* ``shards/<writer>-<n>.jsonl`` (or ``.parquet``) - the finished examples, one row each (id, line, tokens,
  per-token and per-word scores, the record's file). Each writer (the local process or one Ray worker)
  writes its shards itself, through a temporary file and a rename, only after the batch's record files
  are on disk: a shard exists only complete, and every row in it is a finished example;
* ``errors/<writer>-<n>.jsonl`` - examples that failed (id, line, the error); a resumed run retries them;
* ``records/<hash of id>.attn`` - the AttentionRecord of each example (safetensors, atomic writes).

Resuming reads the shards, not the manifest: it drops duplicated rows and rows whose record file is missing or
damaged (another size, a header that is not a record's, or content that no longer matches the digest written in
the row), so those examples are explained again; it refuses files it cannot read and rows whose fields are not
what this tool writes (edited by hand), naming the file, the line and the field.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import InputError

MANIFEST = "manifest.json"
SHARDS = "shards"
ERRORS = "errors"
RECORDS = "records"
LEGACY_RESULTS = "results.jsonl"  # format 1: one results file written by the driver
FORMAT_VERSION = 2
SHARD_FORMATS = ("jsonl", "parquet")


# ---------------------------------------------------------------------------- files
def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # a failed write leaves nothing behind
            tmp.unlink()


# A file's digest reads it whole up to this size; beyond it, _SAMPLES evenly spaced pieces of _SAMPLE bytes.
_SAMPLE = 1 << 16
_SAMPLES = 16


def file_digest(fh: BinaryIO, size: int) -> str:
    """sha256 of a file's size and bytes (of 16 evenly spaced 64 KiB samples when larger than 1 MiB).

    Samples keep a resume of a corpus with gigabytes of records fast; a file zeroed, truncated, grown or swapped
    for another shows in its size or samples.
    """
    h = hashlib.sha256(str(size).encode())
    if size <= _SAMPLE * _SAMPLES:
        fh.seek(0)
        h.update(fh.read())
    else:
        for i in range(_SAMPLES):
            fh.seek((size - _SAMPLE) * i // (_SAMPLES - 1))
            h.update(fh.read(_SAMPLE))
    return h.hexdigest()[:16]


def record_name(example_id: str) -> str:
    """The record file of an example: a hash of its id, so any id makes a safe, stable file name."""
    return f"{RECORDS}/{hashlib.sha1(example_id.encode('utf-8')).hexdigest()[:20]}.attn"


def finite_or_none(values: Any) -> list[Any]:
    """Nested lists of floats with NaN and infinities as None, so rows are strict JSON (``null``)."""
    a = np.asarray(values, dtype=float)
    if np.isfinite(a).all():
        return a.tolist()
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def strict_json(row: dict[str, Any]) -> str:
    """One JSON line; a non-finite float left in a row is a bug, not a bare ``NaN`` in the file."""
    return json.dumps(row, ensure_ascii=False, allow_nan=False)


# ---------------------------------------------------------------------------- Parquet
def _parquet_schema(score_dims: int) -> Any:
    import pyarrow as pa

    scores = pa.list_(pa.float64()) if score_dims == 1 else pa.list_(pa.list_(pa.float64()))
    return pa.schema(
        [
            ("id", pa.string()),
            ("line", pa.int64()),
            ("text_sha1", pa.string()),
            ("text", pa.string()),
            ("method", pa.string()),
            ("task", pa.string()),
            ("label", pa.string()),
            ("output_names", pa.list_(pa.string())),
            ("tokens", pa.list_(pa.string())),
            ("scores", scores),
            ("words", pa.list_(pa.string())),
            ("word_scores", scores),
            ("truncated", pa.bool_()),
            ("record", pa.string()),
            ("record_bytes", pa.int64()),
            ("record_digest", pa.string()),
        ]
    )


def _parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("Parquet shards need pyarrow: pip install 'attn-plugins[ray]' or pyarrow") from None
    dims = 2 if rows and rows[0]["scores"] and isinstance(rows[0]["scores"][0], list) else 1
    schema = _parquet_schema(dims)
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# ---------------------------------------------------------------------------- writing
class ShardWriter:
    """Writes one worker's finished batches: records first, then the shard that marks them done, then errors."""

    def __init__(self, out_dir: str | os.PathLike, shard_format: str = "jsonl") -> None:
        if shard_format not in SHARD_FORMATS:
            raise InputError(f"shard format must be jsonl or parquet, not {shard_format!r}")
        self.out = Path(out_dir)
        self.format = shard_format
        # Sorts by start time; a restarted worker gets a new name, so no shard is ever overwritten.
        self.name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.seq = 0

    def write(self, done: list[tuple[dict[str, Any], bytes | None]], errors: list[dict[str, Any]]) -> dict[str, Any]:
        """Write a batch: (row, record bytes or None) per finished example, and the failed ones."""
        stem = f"{self.name}-{self.seq:06d}"
        self.seq += 1
        rows = []
        for row, blob in done:
            row = dict(row, record=None, record_bytes=None, record_digest=None)
            if blob is not None:
                row["record"] = record_name(row["id"])
                row["record_bytes"] = len(blob)
                row["record_digest"] = file_digest(io.BytesIO(blob), len(blob))
                write_atomic(self.out / row["record"], blob)
            rows.append(row)
        shard = None
        if rows:
            shard = f"{SHARDS}/{stem}.{self.format}"
            if self.format == "parquet":
                data = _parquet_bytes(rows)
            else:
                data = "".join(strict_json(r) + "\n" for r in rows).encode("utf-8")
            write_atomic(self.out / shard, data)
        if errors:
            data = "".join(strict_json(e) + "\n" for e in errors).encode("utf-8")
            write_atomic(self.out / ERRORS / f"{stem}.jsonl", data)
        return {"shard": shard, "ids": [r["id"] for r in rows], "errors": errors}


# ---------------------------------------------------------------------------- reading
def shard_files(out_dir: Path) -> list[Path]:
    """The complete shards of a run, oldest writer first (temporary files of interrupted writes excluded)."""
    folder = out_dir / SHARDS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".jsonl", ".parquet") and ".tmp-" not in p.name)


# The fields a resume reads, and the JSON types this tool writes them with (None: null). Anything else was
# edited by hand: refused with its place, since a guess could mix results or lose one.
SHARD_FIELDS: dict[str, tuple[type, ...]] = {
    "line": (int,),
    "text_sha1": (str,),
    "record": (str,),
    "record_bytes": (int,),
    "record_digest": (str,),
}
ERROR_FIELDS: dict[str, tuple[type, ...]] = {"line": (int,), "error": (str,)}
_TYPE_NAMES = {int: "an integer", str: "a string"}


def _check_row(row: Any, where: str, fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """``row`` when its id and ``fields`` have the types this tool writes; InputError naming ``where`` else."""
    if not isinstance(row, dict) or not isinstance(row.get("id"), str):
        raise InputError(f"{where}: a results line without an id")
    for name, types in fields.items():
        value = row.get(name)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise InputError(
                f"{where}: {name!r} is {json.dumps(value)[:40]}, not {_TYPE_NAMES[types[0]]}; "
                "the row was edited or not written by attn-plugins (fix or delete it)"
            )
    record = row.get("record")
    if "record" in fields and record is not None and record != record_name(row["id"]):
        raise InputError(
            f"{where}: 'record' is {record!r}, not the record file of id {row['id']!r} "
            f"({record_name(row['id'])}); the row was edited or not written by attn-plugins"
        )
    return row


def _read_jsonl(path: Path, rel: str, fields: dict[str, tuple[type, ...]]) -> list[dict[str, Any]]:
    rows = []
    for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"{rel}:{n}: not UTF-8; this file was not written by attn-plugins") from None
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{rel}:{n}: corrupted results line ({exc.msg}); it was not written by this tool"
            ) from None
        rows.append(_check_row(row, f"{rel}:{n}", fields))
    return rows


def read_shard(path: Path, rel: str | None = None) -> list[dict[str, Any]]:
    """The rows of one shard file (JSON Lines or Parquet); rows with fields of the wrong type are refused."""
    rel = rel or str(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        except ImportError:
            raise InputError(f"{rel}: reading Parquet shards needs pyarrow") from None
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a damaged file
            raise InputError(f"{rel}: not a readable Parquet shard ({str(exc).splitlines()[0]})") from None
        return [_check_row(row, f"{rel} row {i}", SHARD_FIELDS) for i, row in enumerate(rows, start=1)]
    return _read_jsonl(path, rel, SHARD_FIELDS)


def _header_problem(fh: BinaryIO, size: int) -> str | None:
    """Why a file is not a safetensors record (its header and the data it describes), or None."""
    head = fh.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    if n < 2 or n + 8 > size:
        return "its header length points past its end"
    try:
        header = json.loads(fh.read(n).decode("utf-8"))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "its header is not a record's"
    if max(ends, default=0) != size - 8 - n:
        return f"its header describes {max(ends, default=0)} bytes of data, it holds {size - 8 - n}"
    return None


def _record_problem(out_dir: Path, row: dict[str, Any]) -> str | None:
    """Why a row's record file cannot be trusted, or None when it is the file the row was written with."""
    name = row.get("record")
    if name is None:
        return None
    path = out_dir / name
    try:
        size = path.stat().st_size
    except OSError:
        return f"record file {name} is missing"
    expected = row.get("record_bytes")
    if expected is not None and size != expected:
        return f"record file {name} has {size} bytes, {expected} were written"
    try:
        with open(path, "rb") as fh:
            problem = _header_problem(fh, size)
            if (
                problem is None
                and row.get("record_digest") is not None
                and file_digest(fh, size) != row["record_digest"]
            ):
                problem = "its content changed since it was written"
    except OSError as exc:
        return f"record file {name} cannot be read ({exc.strerror or exc})"
    return None if problem is None else f"record file {name} is damaged: {problem}"


def load_results(out_dir: str | os.PathLike, repair: bool = False) -> list[dict[str, Any]]:
    """The finished rows of a run directory, one per id, in input order.

    Duplicated rows (a batch a restarted worker wrote twice) and rows whose record file is missing or damaged
    are left out; with ``repair`` their shards are rewritten without them, so a resumed run redoes them.
    """
    rows, _ = verify_results(Path(out_dir), repair=repair)
    return rows


def verify_results(out_dir: Path, repair: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """(finished rows, what was dropped and why) of a run directory; see :func:`load_results`."""
    legacy = out_dir / LEGACY_RESULTS
    files = shard_files(out_dir)
    if legacy.exists() and not files:
        return _read_jsonl(legacy, str(legacy), {}), []  # a format-1 run, read as it is
    kept: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for path in files:
        rel = f"{out_dir.name}/{SHARDS}/{path.name}"
        rows = read_shard(path, rel)
        good = []
        for row in rows:
            problem = "duplicated row" if row["id"] in kept else _record_problem(out_dir, row)
            if problem is None:
                kept[row["id"]] = row
                good.append(row)
            else:
                notes.append(f"id {row['id']!r} ({rel}): {problem}")
        if repair and len(good) < len(rows):
            if not good:
                path.unlink()
            elif path.suffix == ".parquet":
                write_atomic(path, _parquet_bytes(good))
            else:
                write_atomic(path, "".join(strict_json(r) + "\n" for r in good).encode("utf-8"))
    return sorted(kept.values(), key=lambda r: (r.get("line") or 0, r["id"])), notes


def load_errors(out_dir: str | os.PathLike, done: set[str] | None = None) -> list[dict[str, Any]]:
    """The recorded failures of a run that no finished row (ids ``done``, read if not given) has replaced."""
    out = Path(out_dir)
    done = {r["id"] for r in load_results(out)} if done is None else done
    folder = out / ERRORS
    latest: dict[str, dict[str, Any]] = {}
    if folder.is_dir():
        for path in sorted(p for p in folder.glob("*.jsonl") if ".tmp-" not in p.name):
            for row in _read_jsonl(path, f"{out.name}/{ERRORS}/{path.name}", ERROR_FIELDS):
                latest[row["id"]] = row
    return sorted((e for k, e in latest.items() if k not in done), key=lambda e: (e.get("line") or 0, e["id"]))


# ---------------------------------------------------------------------------- the manifest
def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of a run directory, None when there is none; unreadable ones raise InputError."""
    path = out_dir / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a run manifest (not UTF-8)") from None
    except json.JSONDecodeError:
        raise InputError(f"{path}: not a run manifest (invalid JSON)") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("run"), dict):
        raise InputError(f'{path}: not a run manifest (expected an object with a "run" object)')
    return manifest


def prepare(out_dir: Path, run: dict[str, Any], resume: bool) -> dict[str, Any]:
    """Create or check the run directory against ``run`` (what identifies it); returns the manifest."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file; --out needs a directory")
    try:
        for sub in (SHARDS, ERRORS, RECORDS):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the run directory {out_dir}: {exc.strerror or exc}") from None
    has_results = bool(shard_files(out_dir)) or (out_dir / LEGACY_RESULTS).exists()
    old = read_manifest(out_dir)
    if old is not None and has_results:
        if not resume:
            raise InputError(
                f"{out_dir} already holds results; resume the run, or choose an empty directory "
                "(nothing is deleted on your behalf)"
            )
        if old.get("format", 1) != FORMAT_VERSION or (out_dir / LEGACY_RESULTS).exists():
            raise InputError(
                f"{out_dir} was written by an older attn-plugins (one results.jsonl, format 1); "
                "read it with load_results, and run into a new directory"
            )
        keys = sorted(set(old["run"]) | set(run))
        differs = [k for k in keys if old["run"].get(k) != run.get(k)]
        if differs:
            raise InputError(
                f"{out_dir} holds results of a different run ({', '.join(differs)} differ); "
                "resume only with the same model, method and options, or choose another directory"
            )
    elif old is None and has_results:
        raise InputError(f"{out_dir} holds results but no {MANIFEST}; it was not written by this tool")
    for folder in (SHARDS, ERRORS, RECORDS):  # leftovers of writes a killed run did not finish
        for tmp in (out_dir / folder).glob("*.tmp-*"):
            tmp.unlink(missing_ok=True)
    manifest = {"format": FORMAT_VERSION, "run": run}
    write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2).encode("utf-8"))
    return manifest


def finish_manifest(out_dir: Path, manifest: dict[str, Any], counts: dict[str, Any]) -> None:
    """Record what the directory holds after a run: its shard files, counts and the last run's settings."""
    shards = [{"file": f"{SHARDS}/{p.name}", "bytes": p.stat().st_size} for p in shard_files(out_dir)]
    body = {**manifest, **counts, "shards": shards}
    write_atomic(out_dir / MANIFEST, json.dumps(body, indent=2).encode("utf-8"))
