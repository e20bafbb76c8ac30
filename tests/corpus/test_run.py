"""Corpus runs: results equal the explainer's, shards are written as they go, and a stopped run resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import attn_plugins as ap
import attn_plugins.corpus.run as ds
import attn_plugins.corpus.worker as corpus_worker
from attn_plugins.corpus import load_errors, load_results, read_texts
from attn_plugins.corpus.shards import shard_files
from attn_plugins.errors import CorpusError, InputError
from attn_plugins.explain import AttentionExplainer
from attn_plugins.zoo import tiny_bert, tiny_tokenizer

TEXTS = [
    "the movie was good",
    "a very bad film , really bad",
    "i liked the music",
    "boring plot and bad acting",
    "what a great story",
    "the cat saw a dog in the house",
    "hello",
]


@pytest.fixture(scope="module")
def setup() -> tuple:
    return tiny_bert(num_labels=2), tiny_tokenizer("bert")


def write_texts(path: Path, texts: list[str], ids: bool = True) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": f"t{i}", "text": t} if ids else {"text": t}) + "\n")
    return path


def rows_by_id(out: Path) -> dict[str, dict]:
    """Every row of every shard, read as strict JSON; an id written twice fails here."""

    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    rows = []
    for shard in shard_files(out):
        rows += [json.loads(line, parse_constant=refuse) for line in shard.read_text("utf-8").splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows), "an example was written twice"
    return by_id


def test_run_equals_the_explainer_and_writes_records(setup, tmp_path: Path) -> None:
    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS)
    summary = ds.run_corpus(
        model, tok, src, tmp_path / "out", method="rollout", batch_size=2, shard_size=3, progress=False
    )
    assert summary["explained"] == len(TEXTS) and summary["skipped"] == 0 and summary["failed"] == 0
    assert summary["shards"] == 3 and len(shard_files(tmp_path / "out")) == 3  # 3 + 3 + 1 examples
    assert summary["examples_per_second"] > 0
    rows = rows_by_id(tmp_path / "out")
    explainer = AttentionExplainer(model, tok, method="rollout", special_tokens=True)
    for i, text in enumerate(TEXTS):
        row = rows[f"t{i}"]
        expected = explainer(text)  # one text, its own forward: the batched run must agree
        np.testing.assert_allclose(row["scores"], expected.values[0], atol=1e-5)
        assert row["tokens"] == tok.convert_ids_to_tokens(tok(text)["input_ids"])
        assert row["line"] == i + 1 and row["truncated"] is False
        # Words drop [CLS]/[SEP] and sum their pieces; here every word is one token.
        np.testing.assert_allclose(sum(row["word_scores"]), sum(row["scores"][1:-1]), atol=1e-9)
        assert " ".join(row["words"]) == text
        record = ap.load(tmp_path / "out" / row["record"])
        assert row["record_bytes"] == (tmp_path / "out" / row["record"]).stat().st_size
        reference = ap.capture(model, tok, text)
        torch.testing.assert_close(record.attentions["self"], reference.attentions["self"], atol=1e-5, rtol=0)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["run"]["method"] == "rollout" and manifest["run"]["model_class"] == "BertForSequenceClassification"
    assert manifest["examples"] == len(TEXTS) and len(manifest["shards"]) == 3
    assert [r["id"] for r in load_results(tmp_path / "out")] == [f"t{i}" for i in range(len(TEXTS))]


def test_the_default_method_is_the_most_faithful_one_that_supports_the_model(setup, tmp_path: Path) -> None:
    from attn_plugins.explain.defaults import choose

    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS[:2])
    summary = ds.run_corpus(model, tok, src, tmp_path / "out", progress=False)
    chosen = choose(model, tok, "self").method
    assert summary["method"] == "default" and chosen != "rollout"
    rows = rows_by_id(tmp_path / "out")
    explainer = AttentionExplainer(model, tok, special_tokens=True)
    assert explainer.method_name == chosen
    for i, text in enumerate(TEXTS[:2]):
        assert rows[f"t{i}"]["method"] == chosen
        np.testing.assert_allclose(rows[f"t{i}"]["scores"], explainer(text).values[0], atol=1e-5)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["run"]["method"] == "default"


def test_gradient_method_goes_through_the_explainer(setup, tmp_path: Path) -> None:
    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS[:2], ids=False)
    ds.run_corpus(model, tok, src, tmp_path / "out", method="grad_attention", save_records=False, progress=False)
    rows = rows_by_id(tmp_path / "out")
    assert set(rows) == {"1", "2"}  # ids default to the line numbers
    expected = AttentionExplainer(model, tok, method="grad_attention", special_tokens=True)(TEXTS[1])
    np.testing.assert_allclose(rows["2"]["scores"], expected.values[0], atol=1e-6)
    assert rows["2"]["record"] is None


def test_parquet_shards_hold_the_same_rows(setup, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS)
    ds.run_corpus(model, tok, src, tmp_path / "jsonl", shard_size=4, progress=False)
    ds.run_corpus(model, tok, src, tmp_path / "pq", shard_size=4, shard_format="parquet", progress=False)
    files = shard_files(tmp_path / "pq")
    assert [f.suffix for f in files] == [".parquet", ".parquet"]
    table = pq.read_table(files[0])
    assert str(table.schema.field("scores").type) == "list<element: double>" and table.num_rows == 4
    a, b = load_results(tmp_path / "jsonl"), load_results(tmp_path / "pq")
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for x, y in zip(a, b):
        assert x["tokens"] == y["tokens"] and x["words"] == y["words"] and x["record"] == y["record"]
        np.testing.assert_allclose(x["scores"], y["scores"], rtol=0, atol=0)
    assert ap.corpus.corpus_ranking(tmp_path / "pq").words == ap.corpus.corpus_ranking(tmp_path / "jsonl").words


def test_stop_and_resume_redoes_nothing_and_loses_nothing(setup, tmp_path: Path, monkeypatch) -> None:
    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS)
    clean = tmp_path / "clean"
    ds.run_corpus(model, tok, src, clean, batch_size=2, shard_size=2, progress=False)

    calls: list[list[str]] = []
    real = ds.explain_batch

    def stopping(explainer, examples):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run during the third batch
        calls.append([e.id for e in examples])
        return real(explainer, examples)

    monkeypatch.setattr(corpus_worker, "explain_batch", stopping)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        ds.run_corpus(model, tok, src, out, batch_size=2, shard_size=2, progress=False)
    assert set(rows_by_id(out)) == {"t0", "t1", "t2", "t3"}
    # A write killed half-way leaves only a temporary file, never a partial shard; resuming removes it.
    (out / "shards" / "x.jsonl.tmp-1-abc").write_bytes(b'{"id": "t4", "scor')

    calls.clear()
    monkeypatch.setattr(corpus_worker, "explain_batch", lambda e, x: calls.append([y.id for y in x]) or real(e, x))
    summary = ds.run_corpus(model, tok, src, out, batch_size=2, shard_size=2, progress=False)
    assert [i for batch in calls for i in batch] == ["t4", "t5", "t6"]  # only the unfinished ones
    assert summary["skipped"] == 4 and summary["explained"] == 3
    assert not list((out / "shards").glob("*.tmp-*"))
    resumed, reference = rows_by_id(out), rows_by_id(clean)
    assert set(resumed) == set(reference)
    for key, row in reference.items():
        np.testing.assert_allclose(resumed[key]["scores"], row["scores"], atol=1e-6)
        assert (out / resumed[key]["record"]).exists()
    # A finished run resumed again does nothing.
    calls.clear()
    assert ds.run_corpus(model, tok, src, out, progress=False)["explained"] == 0 and not calls


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"text": "good"}', "{not json"], r":2: not valid JSON"),
        (['{"text": "good"}', '{"text": "   "}'], r":2: the text is empty"),
        (['{"id": 1}'], r':1: needs a "text" string'),
        (['["good"]'], r":1: expected an object"),
        (['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'], r"id 'a' was already used on line 1"),
        (['{"id": [1], "text": "x"}'], r'"id" must be'),
        (["", "  "], r"holds no texts"),
        # Valid JSON escapes that are no Unicode text: refused by line, not a UnicodeEncodeError when hashed.
        (
            ['{"text": "good"}', '{"text": "bad \\ud800 film"}'],
            r":2: the text holds a lone surrogate \(\\ud800 at character 5\)",
        ),
        (['{"id": "x\\udc00", "text": "good"}'], r":1: the id holds a lone surrogate \(\\udc00 at character 2\)"),
    ],
)
def test_bad_input_files(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_texts(path)


def test_input_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "texts.jsonl"
    path.write_bytes(b'{"text": "the movie"}\n{"text": "caf\xe9 bad"}\n')
    with pytest.raises(InputError, match=r"texts.jsonl:2: not UTF-8 \(byte 0xe9"):
        read_texts(path)


def test_input_through_a_pyarrow_filesystem_uri(tmp_path: Path) -> None:
    path = write_texts(tmp_path / "texts.jsonl", TEXTS[:2])
    examples = read_texts(path.as_uri())  # file:///...: the same reader as s3:// or gs://
    assert [(e.id, e.text, e.line) for e in examples] == [("t0", TEXTS[0], 1), ("t1", TEXTS[1], 2)]
    with pytest.raises(InputError, match="missing.jsonl: no such file"):
        read_texts((tmp_path / "missing.jsonl").as_uri())
    with pytest.raises(InputError, match="cannot read it"):
        read_texts("nosuchscheme://bucket/texts.jsonl")


def test_resuming_a_different_run_is_refused(setup, tmp_path: Path) -> None:
    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS[:2])
    out = tmp_path / "out"
    ds.run_corpus(model, tok, src, out, save_records=False, progress=False)
    with pytest.raises(InputError, match="method differ"):
        ds.run_corpus(model, tok, src, out, method="raw", save_records=False, progress=False)
    other = tiny_bert(num_labels=2, seed=1)
    with pytest.raises(InputError, match="weights differ"):
        ds.run_corpus(other, tok, src, out, save_records=False, progress=False)
    with pytest.raises(InputError, match="already holds results"):
        ds.run_corpus(model, tok, src, out, resume=False, save_records=False, progress=False)
    changed = write_texts(tmp_path / "changed.jsonl", ["another text", TEXTS[1]])
    with pytest.raises(InputError, match="text of id 't0' changed"):
        ds.run_corpus(model, tok, changed, out, save_records=False, progress=False)
    with pytest.raises(InputError, match="engine"):
        ds.run_corpus(model, tok, src, out, engine="spark", progress=False)
    with pytest.raises(InputError, match="no such file"):
        ds.run_corpus(model, tok, tmp_path / "missing.jsonl", out, save_records=False, progress=False)
    with pytest.raises(InputError, match="shard_size must be a positive integer"):
        ds.run_corpus(model, tok, src, out, shard_size=0, progress=False)
    with pytest.raises(InputError, match="num_gpus_per_worker"):
        ds.run_corpus(model, tok, src, out, num_gpus_per_worker=1, progress=False)


@pytest.mark.parametrize("gpus", [float("nan"), float("inf"), -1, "1", True])
def test_a_gpu_count_that_is_no_finite_number_is_refused_before_ray_starts(setup, tmp_path: Path, gpus) -> None:
    src = write_texts(tmp_path / "texts.jsonl", TEXTS[:1])
    with pytest.raises(InputError, match=r"num_gpus_per_worker must be a finite number of GPUs >= 0"):
        ds.run_corpus(*setup, src, tmp_path / "out", engine="ray", num_gpus_per_worker=gpus, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("engine", ["local", "ray"])
@pytest.mark.parametrize("uri", [False, True], ids=["path", "uri"])
def test_a_folder_or_a_missing_input_is_refused_by_both_engines_before_anything_runs(
    setup, tmp_path: Path, engine: str, uri: bool
) -> None:
    """Ray Data would read every file of a folder (and crash on an empty one, or keep one of two texts that
    share an id); both engines read one file, and say so before a cluster starts or a directory is made."""
    empty, shared = tmp_path / "empty", tmp_path / "shared"
    empty.mkdir()
    shared.mkdir()
    write_texts(shared / "a.jsonl", TEXTS[:2])
    write_texts(shared / "b.jsonl", TEXTS[2:4])  # ids t0, t1 again
    name = (lambda p: p.as_uri()) if uri else str
    for folder in (empty, shared):
        with pytest.raises(InputError, match=r"is a folder; a corpus run reads one JSON Lines file"):
            ds.run_corpus(*setup, name(folder), tmp_path / "out", engine=engine, progress=False)
    with pytest.raises(InputError, match=r"missing.jsonl: no such file"):
        ds.run_corpus(*setup, name(tmp_path / "missing.jsonl"), tmp_path / "out", engine=engine, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe{", "not a run manifest (not UTF-8)"),
        (b"[]", 'not a run manifest (expected an object with a "run" object)'),
        (b'{"run": [1]}', "not a run manifest"),
        (b"{nope", "not a run manifest (invalid JSON)"),
    ],
)
def test_damaged_manifest_is_one_clear_error(setup, tmp_path: Path, content: bytes, message: str) -> None:
    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS[:2])
    out = tmp_path / "out"
    ds.run_corpus(model, tok, src, out, progress=False)
    (out / "manifest.json").write_bytes(content)
    with pytest.raises(InputError, match=r"manifest.json: " + message.replace("(", r"\(").replace(")", r"\)")):
        ds.run_corpus(model, tok, src, out, progress=False)


def test_out_directory_problems_are_input_errors(setup, tmp_path: Path) -> None:
    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS[:1])
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        ds.run_corpus(model, tok, src, tmp_path / "a-file", progress=False)
    with pytest.raises(InputError, match="cannot create the run directory"):
        ds.run_corpus(model, tok, src, tmp_path / "a-file" / "run", progress=False)


def _finished(setup, tmp_path: Path) -> tuple[Path, Path, dict]:
    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS)
    out = tmp_path / "out"
    ds.run_corpus(model, tok, src, out, shard_size=3, progress=False)
    return src, out, rows_by_id(out)


def test_resume_drops_a_duplicated_row_and_keeps_one(setup, tmp_path: Path) -> None:
    src, out, before = _finished(setup, tmp_path)
    first = shard_files(out)[0]
    line = first.read_text("utf-8").splitlines()[0]
    with open(first, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")  # 8 rows for 7 examples
    assert len(load_results(out)) == len(TEXTS)  # readers see one row per id
    summary = ds.run_corpus(*setup, src, out, progress=False)
    assert summary["explained"] == 0 and summary["repaired"] == 1
    assert "duplicated row" in summary["repairs"][0] and "t0" in summary["repairs"][0]
    assert rows_by_id(out).keys() == before.keys()  # the shard was rewritten without the copy


def _rewrite_rows(out: Path, change) -> None:
    """Apply ``change`` to every row of every shard (as a hand edit would)."""
    for shard in shard_files(out):
        rows = [json.loads(line) for line in shard.read_text("utf-8").splitlines()]
        shard.write_text("".join(json.dumps(change(r)) + "\n" for r in rows), "utf-8")


@pytest.mark.parametrize(
    "damage",
    ["deleted", "corrupt", "other size", "grown", "grown, a row without size", "zeros", "zeros, a row without digest",
     "data zeroed"],
)  # fmt: skip
def test_resume_redoes_an_example_whose_record_is_gone_or_damaged(setup, tmp_path: Path, damage: str) -> None:
    src, out, before = _finished(setup, tmp_path)
    record = out / before["t3"]["record"]
    size = record.stat().st_size
    if damage == "deleted":
        record.unlink()
    elif damage == "corrupt":
        record.write_bytes(b"\xff" * size)  # same size, header pointing past the end
    elif damage == "other size":
        record.write_bytes(b"not a record")
    elif damage.startswith("grown"):
        with open(record, "ab") as fh:
            fh.write(b"\0" * 16)  # appended bytes: a record still loads, but not the file that was written
        if damage.endswith("without size"):  # rows of an older version: the header's data length tells
            _rewrite_rows(out, lambda r: {k: v for k, v in r.items() if k not in ("record_bytes", "record_digest")})
    elif damage.startswith("zeros"):
        record.write_bytes(bytes(size))  # same size, all zeros: a header of length 0
        if damage.endswith("without digest"):  # rows of an older version: the header alone tells
            _rewrite_rows(out, lambda r: {k: v for k, v in r.items() if k != "record_digest"})
    else:  # header intact, the attention values zeroed: only the digest in the row tells
        data = bytearray(record.read_bytes())
        data[-64:] = bytes(64)
        record.write_bytes(bytes(data))
    assert [r["id"] for r in load_results(out)] == [f"t{i}" for i in range(len(TEXTS)) if i != 3]
    summary = ds.run_corpus(*setup, src, out, progress=False)
    assert summary["explained"] == 1 and summary["repaired"] == 1 and "t3" in summary["repairs"][0]
    after = rows_by_id(out)
    assert after.keys() == before.keys()
    for row in after.values():
        ap.load(out / row["record"]).validate()
    np.testing.assert_allclose(after["t3"]["scores"], before["t3"]["scores"], atol=1e-6)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("line", "3", "'line' is \"3\", not an integer"),
        ("line", True, "'line' is true, not an integer"),
        ("record", 5, "'record' is 5, not a string"),
        ("record", "../../elsewhere.attn", "'record' is '../../elsewhere.attn', not the record file of id 't0'"),
        ("record_bytes", "12", "'record_bytes' is \"12\", not an integer"),
        ("record_digest", [1], "'record_digest' is \\[1\\], not a string"),
        ("text_sha1", {"a": 1}, "'text_sha1' is {\"a\": 1}, not a string"),
    ],
)
def test_rows_edited_with_fields_of_the_wrong_type_are_refused_by_place(setup, tmp_path, field, value, message):
    src, out, before = _finished(setup, tmp_path)
    _rewrite_rows(out, lambda r: {**r, field: value} if r["id"] == "t0" else r)
    shard = shard_files(out)[0].name
    with pytest.raises(InputError, match=rf"shards/{shard}:1: {message}"):
        ds.run_corpus(*setup, src, out, progress=False)
    with pytest.raises(InputError, match=rf"shards/{shard}:1: {message}"):
        load_results(out)
    _rewrite_rows(out, lambda r: {**r, field: before[r["id"]][field]})  # the edit undone: the run is whole
    assert ds.run_corpus(*setup, src, out, progress=False)["explained"] == 0


def test_error_rows_edited_with_fields_of_the_wrong_type_are_refused(setup, tmp_path: Path) -> None:
    src, out, _ = _finished(setup, tmp_path)
    (out / "errors" / "zz-000000.jsonl").write_text('{"id": "t9", "line": "9", "error": "x"}\n', "utf-8")
    with pytest.raises(InputError, match=r"errors/zz-000000.jsonl:1: 'line' is \"9\", not an integer"):
        load_errors(out)


def test_unreadable_shards_are_refused_with_their_name(setup, tmp_path: Path) -> None:
    src, out, _ = _finished(setup, tmp_path)
    bad = out / "shards" / "zz-bad.jsonl"
    bad.write_bytes(b'{"id": "zz\xff"}\n')
    with pytest.raises(InputError, match=r"shards/zz-bad.jsonl:1: not UTF-8"):
        ds.run_corpus(*setup, src, out, progress=False)
    bad.write_bytes(b'{"id": "zz", "scor\n')
    with pytest.raises(InputError, match=r"zz-bad.jsonl:1: corrupted results line"):
        load_results(out)
    bad.unlink()
    (out / "shards" / "zz-bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match=r"zz-bad.parquet: not a readable Parquet shard"):
        load_results(out)


class _Plugin:
    """Methods that break the contract: NaN scores, and 3 scores too many."""

    @staticmethod
    def nan(record, position="first", kind=None, **_):
        scores = np.linspace(0.1, 0.9, record.attentions[kind or record.default_kind].shape[-1])
        scores[1] = np.nan
        return scores

    @staticmethod
    def seven(record, position="first", kind=None, **_):
        return np.linspace(0.1, 0.7, record.attentions[kind or record.default_kind].shape[-1] + 3)

    @ap.hookimpl
    def attn_plugins_register_methods(self, register):
        register("t_nan", self.nan)
        register("t_seven", self.seven)


@pytest.fixture(scope="module")
def bad_methods():
    ap.register_plugin(_Plugin(), name="corpus_test_methods")
    yield


def test_nan_scores_fail_the_example_by_name_and_no_nan_reaches_a_file(setup, bad_methods, tmp_path: Path) -> None:
    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS[:2])
    with pytest.raises(CorpusError, match=r"2 of 2 examples failed .*id 't0': method 't_nan' .*non-finite scores"):
        ds.run_corpus(model, tok, src, tmp_path / "out", method="t_nan", progress=False)
    assert [e["id"] for e in load_errors(tmp_path / "out")] == ["t0", "t1"]
    assert not shard_files(tmp_path / "out")


def test_rows_are_strict_json_with_non_finite_values_as_null() -> None:
    from attn_plugins.corpus.shards import finite_or_none, strict_json

    row = {"scores": finite_or_none([0.1, float("nan"), float("inf")]), "nested": finite_or_none([[1.0, -np.inf]])}
    assert json.loads(strict_json(row)) == {"scores": [0.1, None, None], "nested": [[1.0, None]]}
    with pytest.raises(ValueError):
        strict_json({"scores": [float("nan")]})


def test_a_method_with_the_wrong_number_of_scores_fails_each_example_by_name(setup, bad_methods, tmp_path) -> None:
    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS[:3])
    with pytest.raises(
        CorpusError, match=r"3 of 3 examples failed .*id 't0': method 't_seven' .*gave scores of shape \(9,\) for 6"
    ):
        ds.run_corpus(model, tok, src, tmp_path / "out", method="t_seven", progress=False)
    errors = load_errors(tmp_path / "out")
    assert [e["id"] for e in errors] == ["t0", "t1", "t2"] and all("t_seven" in e["error"] for e in errors)
    assert not shard_files(tmp_path / "out")


def test_one_failing_example_is_recorded_and_the_run_goes_on(setup, tmp_path: Path, monkeypatch) -> None:
    model, tok = setup
    src = write_texts(tmp_path / "texts.jsonl", TEXTS)
    real = ds.explain_batch

    def fragile(explainer, examples):
        if any(e.id == "t4" for e in examples):
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(explainer, examples)

    monkeypatch.setattr(corpus_worker, "explain_batch", fragile)
    out = tmp_path / "out"
    with pytest.raises(
        CorpusError, match=r"1 of 7 examples failed .*texts.jsonl:5 id 't4': RuntimeError: CUDA"
    ) as info:
        ds.run_corpus(model, tok, src, out, batch_size=3, shard_size=4, progress=False)
    assert info.value.summary["explained"] == 6 and info.value.failures[0]["line"] == 5
    assert set(rows_by_id(out)) == {f"t{i}" for i in range(7)} - {"t4"}  # its batch-mates were isolated and kept
    assert [e["id"] for e in load_errors(out)] == ["t4"]
    monkeypatch.setattr(corpus_worker, "explain_batch", real)
    summary = ds.run_corpus(model, tok, src, out, progress=False)  # resuming retries the failure
    assert summary["explained"] == 1 and summary["failed"] == 0 and load_errors(out) == []


def test_truncation_cuts_an_over_long_text_in_a_batched_run_and_the_rows_say_so(setup, tmp_path: Path) -> None:
    """The corpus side of --truncate: a text over the model's 64 positions is explained by its prefix, batched with
    a short one, and only its row and record say it was cut."""
    model, tok = setup
    long = " ".join(["word"] * 200)
    src = write_texts(tmp_path / "texts.jsonl", [TEXTS[0], long])
    with pytest.raises(CorpusError, match="pass truncation=True"):
        ds.run_corpus(model, tok, src, tmp_path / "refused", progress=False)
    ds.run_corpus(model, tok, src, tmp_path / "out", method="raw", truncation=True, progress=False)
    rows = rows_by_id(tmp_path / "out")
    assert rows["t0"]["truncated"] is False and rows["t1"]["truncated"] is True
    assert len(rows["t1"]["tokens"]) == 64 and len(rows["t0"]["tokens"]) < 64
    assert ap.load(tmp_path / "out" / rows["t1"]["record"]).meta.get("truncated") is True
    assert not ap.load(tmp_path / "out" / rows["t0"]["record"]).meta.get("truncated")


def test_word_scores_group_pieces_and_skip_specials() -> None:
    tokens = ["[CLS]", "un", "##believ", "##able", "film", "[SEP]"]
    scores = np.array([0.5, 0.1, 0.2, 0.3, 0.4, 0.6])
    words, summed = ds.word_scores(scores, tokens, [None, 0, 0, 0, 1, None], None, None, None)
    assert words == ["unbelievable", "film"]
    np.testing.assert_allclose(summed, [0.6, 0.4])
    text = "Unbelievable film"
    offsets = [(0, 0), (0, 2), (2, 8), (8, 12), (13, 17), (0, 0)]
    words, _ = ds.word_scores(np.c_[scores, scores], tokens, [None, 0, 0, 0, 1, None], offsets, text, None)
    assert words == ["Unbelievable", "film"]


def test_a_model_given_by_path_runs_like_the_object(setup, tmp_path: Path) -> None:
    model, tok = setup
    path = tmp_path / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    src = write_texts(tmp_path / "texts.jsonl", TEXTS[:3])
    ds.run_corpus(model, tok, src, tmp_path / "object", progress=False)
    ds.run_corpus(str(path), None, src, tmp_path / "named", progress=False)
    manifest = json.loads((tmp_path / "named" / "manifest.json").read_text())
    assert set(manifest["run"]) == {"model_dir", "task_model", "method", "options"}
    for a, b in zip(load_results(tmp_path / "object"), load_results(tmp_path / "named")):
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-6)
    # Another model in the same directory is another run.
    tiny_bert(num_labels=2, seed=3).save_pretrained(path)
    with pytest.raises(InputError, match="model_dir differ"):
        ds.run_corpus(str(path), None, src, tmp_path / "named", progress=False)
    with pytest.raises(InputError, match="does not exist"):
        ds.run_corpus(str(tmp_path / "nope"), None, src, tmp_path / "x", progress=False)


def test_a_record_file_that_grew_is_redone_on_resume(setup, tmp_path: Path) -> None:
    """Bytes appended to a record (a second writer, a bad copy) leave its header readable: the size tells."""
    src, out, before = _finished(setup, tmp_path)
    record = out / before["t2"]["record"]
    record.write_bytes(record.read_bytes() + b"\0" * 64)
    assert [r["id"] for r in load_results(out)] == [f"t{i}" for i in range(len(TEXTS)) if i != 2]
    summary = ds.run_corpus(*setup, src, out, progress=False)
    assert summary["explained"] == 1 and summary["repaired"] == 1
    assert "t2" in summary["repairs"][0] and "bytes" in summary["repairs"][0]
    after = rows_by_id(out)
    assert (out / after["t2"]["record"]).stat().st_size == after["t2"]["record_bytes"]
    np.testing.assert_allclose(after["t2"]["scores"], before["t2"]["scores"], atol=1e-6)


def test_a_run_resumed_with_the_model_given_another_way_must_be_the_same_model(setup, tmp_path: Path) -> None:
    """Started from the object, resumed from its saved directory: the same model goes on; another is refused."""
    model, tok = setup
    same, other = tmp_path / "same", tmp_path / "other"
    model.save_pretrained(same)
    tok.save_pretrained(same)
    tiny_bert(num_labels=2, seed=3).save_pretrained(other)
    tok.save_pretrained(other)
    src = write_texts(tmp_path / "texts.jsonl", TEXTS[:2])
    out = tmp_path / "out"
    ds.run_corpus(model, tok, src, out, save_records=False, progress=False)
    more = write_texts(tmp_path / "more.jsonl", TEXTS[:3])
    with pytest.raises(InputError, match="weights differ"):
        ds.run_corpus(str(other), None, more, out, save_records=False, progress=False)
    summary = ds.run_corpus(str(same), None, more, out, save_records=False, progress=False)
    assert summary["explained"] == 1 and summary["skipped"] == 2
    assert ds.run_corpus(model, tok, more, out, save_records=False, progress=False)["skipped"] == 3  # and back
    # A run started from a directory is matched by that directory's files: an object cannot be checked against it.
    named = tmp_path / "named"
    ds.run_corpus(str(same), None, src, named, save_records=False, progress=False)
    with pytest.raises(InputError, match="started from the model directory.*resume it with that directory"):
        ds.run_corpus(model, tok, more, named, save_records=False, progress=False)
    assert ds.run_corpus(str(same), None, more, named, save_records=False, progress=False)["explained"] == 1
