"""Fixed-seed byte-level fuzz of ap.load.

A valid saved record is damaged at 2000 seeded positions (a flipped byte, a truncation, or inserted
bytes, in turn), and every header field is replaced by values of every JSON type. Every failure must be
``ap.RecordFormatError`` (never another exception) and every record that does load must validate and
be usable. Runs in a few seconds.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import torch
from helpers.broken import header_parts, with_header

import attn_plugins as ap

SEED = 14
CASES = 2000
BUDGET_SECONDS = 20


def _valid_record_bytes(tmp_path) -> bytes:
    g = torch.Generator().manual_seed(0)
    att = torch.softmax(3 * torch.randn(2, 2, 5, 5, generator=g), -1)
    rec = ap.AttentionRecord(
        tokens=["[CLS]", "the", "movie", "rocks", "[SEP]"],
        attentions={"self": att},
        word_ids=[None, 0, 1, 2, None],
        offsets=[(0, 0), (0, 3), (4, 9), (10, 15), (0, 0)],
        special_tokens_mask=[True, False, False, False, True],
        text="the movie rocks",
        value_norms={"self": torch.rand(2, 2, 5, generator=g)},
        outputs={"logits": torch.tensor([0.2, -1.0])},
        meta={"model_type": "bert", "causal": False},
    )
    rec.validate()
    path = tmp_path / "valid.attn"
    ap.save(rec, path)
    return path.read_bytes()


def _mutate(data: bytes, rng: random.Random, i: int) -> tuple[str, bytes]:
    pos = rng.randrange(len(data))
    op = ("flip", "truncate", "insert")[i % 3]
    if op == "flip":
        out = bytearray(data)
        out[pos] ^= rng.randrange(1, 256)
        return f"flip@{pos}", bytes(out)
    if op == "truncate":
        return f"truncate@{pos}", data[:pos]
    blob = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return f"insert@{pos}+{len(blob)}", data[:pos] + blob + data[pos:]


def test_byte_flip_fuzz_of_load(tmp_path):
    data = _valid_record_bytes(tmp_path)
    rng = random.Random(SEED)
    path = tmp_path / "fuzzed.attn"
    outcomes: Counter = Counter()
    failures: list[str] = []
    start = time.perf_counter()
    for i in range(CASES):
        what, blob = _mutate(data, rng, i)
        path.write_bytes(blob)
        rec = _load(path, what, outcomes, failures, width=100)
        if rec is None:
            continue
        try:
            rec.validate()
            outcomes["loaded, valid"] += 1
        except Exception as exc:
            outcomes[f"loaded, invalid ({type(exc).__name__})"] += 1
            failures.append(f"{what}: loaded a record that fails validate(): {str(exc)[:100]}")
    elapsed = time.perf_counter() - start
    print(f"fuzz outcomes over {CASES} cases in {elapsed:.1f}s: {dict(outcomes)}")
    assert elapsed < BUDGET_SECONDS, f"the fuzz took {elapsed:.1f}s"
    assert not failures, f"{len(failures)} of {CASES} damaged files: {dict(outcomes)}; e.g.\n" + "\n".join(failures[:8])


def _load(path, what: str, outcomes: Counter, failures: list[str], width: int):
    """``ap.load(path)``, or None with the outcome counted: a RecordFormatError is right, anything else a failure."""
    try:
        return ap.load(path)
    except ap.RecordFormatError:
        outcomes["RecordFormatError"] += 1
    except Exception as exc:
        outcomes[type(exc).__name__] += 1
        failures.append(f"{what}: ap.load raised {type(exc).__name__}: {str(exc)[:width]}")
    return None


REPLACEMENTS = [None, [], {}, 0, -5, 2**70, 1.5, True, "x", [[1, 2]], {"a": 1}, [None], ["x"] * 50]


def test_header_field_type_fuzz_of_load(tmp_path):
    """Every header field (and every meta entry) replaced by values of every JSON type."""
    data = _valid_record_bytes(tmp_path)
    _, header, _ = header_parts(data)
    targets = (
        [(k, None) for k in header] + [("meta", k) for k in header["meta"]] + [("meta", "layers"), ("meta", "heads")]
    )
    path = tmp_path / "typed.attn"
    outcomes: Counter = Counter()
    failures: list[str] = []
    for field, sub in targets:
        for value in REPLACEMENTS:

            def edit(h, field=field, sub=sub, value=value):
                if sub is None:
                    h[field] = value
                else:
                    h[field][sub] = value

            path.write_bytes(with_header(data, edit))
            what = f"{field}{'.' + sub if sub else ''} = {value!r:.30}"
            rec = _load(path, what, outcomes, failures, width=80)
            if rec is None:
                continue
            try:
                rec.validate()
                # A loaded record must also survive what every reader does with it.
                rec.layer_ids(), rec.head_ids(), repr(rec)
                ap.attribute(rec, "raw")
                outcomes["loaded, usable"] += 1
            except Exception as exc:
                outcomes[f"loaded, then {type(exc).__name__}"] += 1
                failures.append(f"{what}: loaded, then {type(exc).__name__}: {str(exc)[:80]}")
    print(f"header type fuzz: {len(targets) * len(REPLACEMENTS)} cases: {dict(outcomes)}")
    assert not failures, f"{len(failures)} cases: {dict(outcomes)}; e.g.\n" + "\n".join(failures[:12])
