"""ap.load: every failure is RecordFormatError naming the file and field; whatever loads is a valid record."""

from __future__ import annotations

import builtins
import json
import os

import numpy as np
import pytest
import torch
from helpers.broken import header_parts, leftovers, with_header

import attn_plugins as ap


def _check_load_fails(path, *fields: str) -> ap.RecordFormatError:
    try:
        loaded = ap.load(path)
    except ap.RecordFormatError as exc:
        for f in fields:
            assert f in str(exc), f"{f!r} not named in: {exc}"
        return exc
    except Exception as exc:
        pytest.fail(f"ap.load raised {type(exc).__name__} (not RecordFormatError): {exc}")
    pytest.fail(f"ap.load accepted the file silently: {loaded!r}")


# ---------------------------------------------------------------------------- malformed headers
HEADER_EDITS = {
    "meta is a list": (lambda h: h.__setitem__("meta", []), "meta"),
    "meta is null": (lambda h: h.__setitem__("meta", None), "meta"),
    "meta is a string": (lambda h: h.__setitem__("meta", "x"), "meta"),
    "offsets is an int": (lambda h: h.__setitem__("offsets", 5), "offsets"),
    "offsets holds ints": (lambda h: h.__setitem__("offsets", list(range(len(h["tokens"])))), "offsets"),
    "tokens are ints": (lambda h: h.__setitem__("tokens", list(range(len(h["tokens"])))), "tokens"),
    "tokens is a string": (lambda h: h.__setitem__("tokens", "abcdef"), "tokens"),
    "word_ids is a string": (lambda h: h.__setitem__("word_ids", "abcdef"), "word_ids"),
    "special_tokens_mask too short": (lambda h: h.__setitem__("special_tokens_mask", [True]), "special_tokens_mask"),
    "text is an int": (lambda h: h.__setitem__("text", 5), "text"),
    "schema_version true": (lambda h: h["meta"].__setitem__("schema_version", True), "schema_version"),
    "schema_version -5": (lambda h: h["meta"].__setitem__("schema_version", -5), "schema_version"),
    "schema_version 0": (lambda h: h["meta"].__setitem__("schema_version", 0), "schema_version"),
    "schema_version 1.5": (lambda h: h["meta"].__setitem__("schema_version", 1.5), "schema_version"),
    "meta.layers is an int": (lambda h: h["meta"].__setitem__("layers", 5), "layers"),
    "meta.causal is a string": (lambda h: h["meta"].__setitem__("causal", "yes"), "causal"),
    "header is a list": (lambda h: [h], None),
}


@pytest.mark.parametrize("case", list(HEADER_EDITS))
def test_malformed_header_is_a_format_error(saved_record, tmp_path, case):
    edit, field = HEADER_EDITS[case]
    path = tmp_path / "bad.attn"
    path.write_bytes(with_header(saved_record.read_bytes(), edit))
    exc = _check_load_fails(path, *([field] if field else []))
    assert str(path) in str(exc)


def test_deeply_nested_header_is_a_format_error(saved_record, tmp_path):
    _, header, _ = header_parts(saved_record.read_bytes())
    text = json.dumps(header)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = tmp_path / "deep.attn"
    path.write_bytes(with_header(saved_record.read_bytes(), raw_text=text))
    _check_load_fails(path, "nested")  # was: RecursionError


# ---------------------------------------------------------------------------- paths that cannot be read
def test_directory_is_a_format_error(tmp_path):
    (tmp_path / "dir.attn").mkdir()
    _check_load_fails(tmp_path / "dir.attn", "directory")  # was: IsADirectoryError


def test_name_too_long_is_a_format_error(tmp_path):
    _check_load_fails(tmp_path / ("x" * 300 + ".attn"))  # was: OSError ENAMETOOLONG


def test_path_with_nul_is_a_format_error(tmp_path):
    _check_load_fails(os.fspath(tmp_path) + "/a\x00b.attn")  # was: ValueError embedded null byte


def test_unreadable_file_is_a_format_error(saved_record, tmp_path, monkeypatch):
    path = tmp_path / "locked.attn"
    path.write_bytes(saved_record.read_bytes())
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file (CI runs as root): the system's refusal is simulated
        real_open = builtins.open

        def refusing(file, *args, **kwargs):
            if os.fspath(file) == os.fspath(path):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing)
    _check_load_fails(path, "cannot be read (Permission denied)")


def test_missing_file_is_a_format_error(tmp_path):
    _check_load_fails(tmp_path / "nope.attn", "no such file")


# ---------------------------------------------------------------------------- inconsistent records
def _nan(a: torch.Tensor) -> torch.Tensor:
    a = a.clone()
    a[0, 0, 0, 0] = float("nan")
    return a


def _att(*shape: int) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(0)), -1)


def _inf_row(a: torch.Tensor) -> torch.Tensor:
    return a.index_fill(3, torch.tensor([0]), float("inf"))


INCONSISTENT = {
    "1 token, 2x2 attention": (dict(tokens=["a"], attentions={"self": _att(1, 1, 2, 2)}), "attentions"),
    "3 tokens, 2x2 attention": (dict(tokens=["a", "b", "c"], attentions={"self": _att(1, 1, 2, 2)}), "attentions"),
    "rank-2 attention": (dict(tokens=["a", "b"], attentions={"self": _att(2, 2)}), "attentions"),
    "rank-3 attention": (dict(tokens=["a", "b"], attentions={"self": _att(1, 2, 2)}), "attentions"),
    "rank-5 attention": (dict(tokens=["a", "b"], attentions={"self": _att(1, 1, 1, 2, 2)}), "attentions"),
    "int32 attention": (
        dict(tokens=["a", "b"], attentions={"self": torch.ones(1, 1, 2, 2, dtype=torch.int32)}),
        "attentions",
    ),
    "bool attention": (
        dict(tokens=["a", "b"], attentions={"self": torch.ones(1, 1, 2, 2, dtype=torch.bool)}),
        "attentions",
    ),
    "no layers": (dict(tokens=["a", "b"], attentions={"self": torch.ones(0, 1, 2, 2)}), "attentions"),
    "unknown kind": (dict(tokens=["a", "b"], attentions={"weird": _att(1, 1, 2, 2)}), "weird"),
    "no attention": (dict(tokens=["a", "b"], attentions={}), "attentions"),
    "NaN attention": (dict(tokens=["a", "b"], attentions={"self": _nan(_att(1, 1, 2, 2))}), "attentions"),
    "inf attention": (dict(tokens=["a", "b"], attentions={"self": _inf_row(_att(1, 1, 2, 2))}), "attentions"),
    "rows not summing to 1": (
        dict(tokens=["a", "b"], attentions={"self": torch.full((1, 1, 2, 2), 0.9)}),
        "attentions",
    ),
    "negative weights": (
        dict(tokens=["a", "b"], attentions={"self": torch.tensor([[[[1.5, -0.5], [0.5, 0.5]]]])}),
        "attentions",
    ),
    "empty tokens": (dict(tokens=[], attentions={"self": torch.ones(1, 1, 0, 0)}), "tokens"),
    "cross without target tokens": (dict(tokens=["a", "b"], attentions={"cross": _att(1, 1, 2, 2)}), "target_tokens"),
    "NaN gradients": (
        dict(tokens=["a", "b"], attentions={"self": _att(1, 1, 2, 2)}, gradients={"self": _nan(_att(1, 1, 2, 2))}),
        "gradients",
    ),
    "gradients of another shape": (
        dict(tokens=["a", "b"], attentions={"self": _att(1, 1, 2, 2)}, gradients={"self": torch.ones(1, 1, 3, 3)}),
        "gradients",
    ),
    "gradients of rank 5": (
        dict(tokens=["a", "b"], attentions={"self": _att(1, 1, 2, 2)}, gradients={"self": torch.ones(1, 1, 2, 2, 1)}),
        "gradients",
    ),
    "value_norms for 3 keys": (
        dict(tokens=["a", "b"], attentions={"self": _att(1, 1, 2, 2)}, value_norms={"self": torch.ones(1, 1, 3)}),
        "value_norms",
    ),
    "NaN value_norms": (
        dict(
            tokens=["a", "b"],
            attentions={"self": _att(1, 1, 2, 2)},
            value_norms={"self": torch.full((1, 1, 2), float("nan"))},
        ),
        "value_norms",
    ),
    "negative value_norms": (
        dict(tokens=["a", "b"], attentions={"self": _att(1, 1, 2, 2)}, value_norms={"self": -torch.ones(1, 1, 2)}),
        "value_norms",
    ),
    "word_ids too short": (dict(tokens=["a", "b"], attentions={"self": _att(1, 1, 2, 2)}, word_ids=[0]), "word_ids"),
    "negative word id": (dict(tokens=["a", "b"], attentions={"self": _att(1, 1, 2, 2)}, word_ids=[0, -3]), "word_ids"),
    "target_special_tokens_mask without target": (
        dict(tokens=["a", "b"], attentions={"self": _att(1, 1, 2, 2)}, target_special_tokens_mask=[True]),
        "target_special_tokens_mask",
    ),
    "NaN extras": (
        dict(
            tokens=["a", "b"],
            attentions={"self": _att(1, 1, 2, 2)},
            extras={"alti": torch.full((1, 2, 2), float("nan"))},
        ),
        "extras",
    ),
    "meta.layers of the wrong length": (
        dict(tokens=["a", "b"], attentions={"self": _att(1, 1, 2, 2)}, meta={"layers": {"self": [0, 1]}}),
        "layers",
    ),
}


@pytest.mark.parametrize("case", list(INCONSISTENT))
def test_inconsistent_record_is_refused_on_load(tmp_path, case):
    fields, name = INCONSISTENT[case]
    path = tmp_path / "bad.attn"
    ap.save(ap.AttentionRecord(**fields), path)  # the constructor does not validate; save writes what it is given
    _check_load_fails(path, name)


def test_attribute_never_scores_more_keys_than_tokens(tmp_path):
    """The issue's example: a file with 1 token and 2x2 attention; ap.attribute returned 2 scores."""
    path = tmp_path / "bad.attn"
    record = ap.AttentionRecord(tokens=["a"], attentions={"self": _att(1, 1, 2, 2)})
    ap.save(record, path)
    _check_load_fails(path, "attentions")
    with pytest.raises(ap.RecordValidationError, match="attentions"):
        ap.attribute(record, "raw")  # the in-memory record is refused by the method too


def test_valid_record_still_loads_bit_exactly(saved_record):
    rec = ap.load(saved_record)
    rec.validate()
    again = ap.load(saved_record)
    assert torch.equal(rec.attentions["self"], again.attentions["self"])
    assert np.asarray(ap.attribute(rec, "raw")).shape == (len(rec.tokens),)


def test_integer_special_token_flags_survive_a_round_trip(tmp_path):
    """0/1 flags (what tokenizers return) are accepted by the record and stored as booleans."""
    rec = ap.AttentionRecord(
        tokens=["[CLS]", "a", "[SEP]"], attentions={"self": _att(1, 1, 3, 3)}, special_tokens_mask=[1, 0, 1]
    )
    ap.save(rec, tmp_path / "flags.attn")
    assert ap.load(tmp_path / "flags.attn").special_tokens_mask == [True, False, True]


# ---------------------------------------------------------------------------- ap.save
def test_save_leaves_no_temporary_file_when_the_rename_fails(saved_record, tmp_path):
    rec = ap.load(saved_record)
    target = tmp_path / "taken.attn"
    target.mkdir()  # the final rename onto a directory fails
    with pytest.raises(ap.OutputError, match="taken.attn: it is a directory"):
        ap.save(rec, target)
    assert leftovers(tmp_path) == [], "ap.save left its temporary file"


def test_save_into_a_missing_directory_is_an_output_error(saved_record, tmp_path):
    with pytest.raises(ap.OutputError, match="its directory does not exist"):
        ap.save(ap.load(saved_record), tmp_path / "nowhere" / "r.attn")
    assert leftovers(tmp_path) == []


def test_save_cleans_up_when_writing_fails_midway(saved_record, tmp_path, monkeypatch):
    """A write that fails after the temporary file exists (a full disk) removes it."""
    import attn_plugins.files as files

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(ap.OutputError, match="no space left"):
        ap.save(ap.load(saved_record), tmp_path / "r.attn")
    assert leftovers(tmp_path) == [] and not (tmp_path / "r.attn").exists()
