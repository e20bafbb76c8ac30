"""ap.save / ap.load: round trips, schema versions, and files that must be refused without running code."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save as st_save

import attn_plugins as ap
from attn_plugins import AttentionRecord, RecordFormatError


def record() -> AttentionRecord:
    torch.manual_seed(0)
    n = 4
    return AttentionRecord(
        tokens=["[CLS]", "héllo", "</script>", "[SEP]"],
        attentions={"self": torch.softmax(torch.randn(2, 3, n, n), -1)},
        word_ids=[None, 0, 1, None],
        offsets=[(0, 0), (0, 5), (6, 15), (0, 0)],
        special_tokens_mask=[True, False, False, True],
        text="héllo </script>",
        gradients={"self": torch.randn(2, 3, n, n)},
        value_norms={"self": torch.rand(2, 3, n)},
        outputs={"logits": torch.tensor([0.1, -0.2])},
        extras={"alti": torch.rand(2, n, n)},
        meta={"model_type": "bert", "causal": False},
    )


def test_round_trip_keeps_every_field(tmp_path):
    rec = record()
    path = tmp_path / "x.attn"
    ap.save(rec, path)
    back = ap.load(path)
    for name in ("tokens", "word_ids", "offsets", "special_tokens_mask", "text", "target_tokens"):
        assert getattr(back, name) == getattr(rec, name), name
    for group in ("attentions", "gradients", "value_norms", "outputs", "extras"):
        got, want = getattr(back, group), getattr(rec, group)
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), (group, k)
    assert back.meta == rec.meta
    back.validate()


def test_float16_is_stored_as_float16(tmp_path):
    rec = record().to(torch.float16)
    ap.save(rec, tmp_path / "h.attn")
    assert ap.load(tmp_path / "h.attn").attentions["self"].dtype == torch.float16
    full = tmp_path / "f.attn"
    ap.save(record(), full)
    assert (tmp_path / "h.attn").stat().st_size < full.stat().st_size


def test_newer_schema_version_is_refused(tmp_path):
    header = {"tokens": ["a"], "meta": {"schema_version": 99}}
    data = st_save({"attentions/self": torch.ones(1, 1, 1, 1)}, metadata={"attn_plugins": json.dumps(header)})
    path = tmp_path / "future.attn"
    path.write_bytes(data)
    with pytest.raises(RecordFormatError, match="schema version 99.*upgrade"):
        ap.load(path)


def test_truncated_and_corrupted_files_raise_clear_errors(tmp_path):
    path = tmp_path / "x.attn"
    ap.save(record(), path)
    data = path.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "tiny": data[:5],
        "header-cut": data[:8] + data[8:40],
        "garbage": b"\x00" * 8 + b"not json at all",
        "bad-length": struct.pack("<Q", 10**12) + data[8:],
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.attn"
        p.write_bytes(blob)
        with pytest.raises(RecordFormatError):
            ap.load(p)
    with pytest.raises(RecordFormatError, match="no such file"):
        ap.load(tmp_path / "missing.attn")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_never_unpickles(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.attn"
    with open(path, "wb") as fh:
        pickle.dump(_Exploit(marker), fh)
    with pytest.raises(RecordFormatError):
        ap.load(path)
    torch.save({"x": _Exploit(marker)}, tmp_path / "evil2.attn")
    with pytest.raises(RecordFormatError):
        ap.load(tmp_path / "evil2.attn")
    assert not marker.exists()


def test_unserializable_meta_is_a_clear_error(tmp_path):
    rec = record()
    rec.meta["bad"] = object()
    with pytest.raises(RecordFormatError, match="JSON"):
        ap.save(rec, tmp_path / "x.attn")
    assert not (tmp_path / "x.attn").exists()


def test_encoder_decoder_record_keeps_every_field_through_save_and_load(tmp_path):
    """Every field of a captured encoder-decoder record comes back equal (the target side included)."""
    import dataclasses

    from helpers.models import bart_seq2seq

    model, tok = bart_seq2seq()
    rec = ap.capture(model, tok, "the cat saw a dog", target="a dog", values=True, value_norms=True, qk=True)
    rec.extras["sink_mass.cross"] = torch.rand(2, 4, len(rec.target_tokens))
    assert rec.target_special_tokens_mask is not None and any(rec.target_special_tokens_mask)
    assert rec.target_tokens and rec.target_text == "a dog"
    ap.save(rec, tmp_path / "s2s.attn")
    back = ap.load(tmp_path / "s2s.attn")
    for f in dataclasses.fields(AttentionRecord):
        want, got = getattr(rec, f.name), getattr(back, f.name)
        if isinstance(want, dict) and want and all(isinstance(v, torch.Tensor) for v in want.values()):
            assert want.keys() == got.keys(), f.name
            for key in want:
                assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), (f.name, key)
        else:
            assert got == want, f.name
    for group in ("values", "value_norms", "queries", "keys"):
        assert set(getattr(back, group)) == {"encoder", "decoder", "cross"}, group
    # A loaded record drops special tokens on both sides, which needs the target mask.
    dropped = back.drop_special_tokens()
    assert len(dropped.target_tokens) == sum(not m for m in rec.target_special_tokens_mask)


def test_version_1_sink_records_load_with_exact_rows_and_the_sink_field(monkeypatch):
    """Schema 1 kept renormalized rows and ``extras['sink_mass.<kind>']``; loading gives the model's exact rows."""
    import attn_plugins.record.storage as storage

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 3, 3, generator=g)
    full = torch.cat([logits, torch.zeros(1, 2, 3, 1)], dim=-1).softmax(-1)  # the last column is a sink
    exact, sink = full[..., :3], full[..., 3]
    old = ap.AttentionRecord(
        tokens=["a", "b", "c"],
        attentions={"self": exact / exact.sum(-1, keepdim=True)},
        extras={"sink_mass.self": sink},
    )
    monkeypatch.setattr(storage, "SCHEMA_VERSION", 1)
    data = storage.to_bytes(old)
    monkeypatch.undo()
    rec = storage.from_bytes(data)
    assert "sink_mass.self" not in rec.extras and rec.meta["schema_version"] == 1
    assert torch.allclose(rec.attentions["self"], exact, atol=1e-6)
    assert torch.allclose(rec.sink_mass["self"], sink)
    rec.validate()
