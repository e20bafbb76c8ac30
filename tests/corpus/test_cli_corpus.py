"""Corpus runs through the command line (the issue-14 QA cases, adapted to the sharded layout): every
mistake is one ``attn-plugins: error:`` line and exit 2; damaged results are repaired or refused; what is
written is strict JSON; an over-long line fails alone (named), and --truncate explains it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import attn_plugins as ap
from attn_plugins.cli import main
from attn_plugins.corpus import load_errors, load_results
from attn_plugins.corpus.shards import shard_files
from attn_plugins.zoo import tiny_bert, tiny_tokenizer

TEXTS = ["the movie was great", "a bad film", "hello", "i liked the book", "the dog and the cat", "very boring"]
LONG = " ".join(["the movie was great and the book was very good but the film"] * 10)  # 122 tokens; limit 64
_PROGRESS = re.compile(r"\d+%\|.*\|")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-cls")
    tiny_bert(num_labels=2).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def _input(path: Path, texts=TEXTS, ids=None) -> Path:
    ids = ids or [f"ex{i}" for i in range(len(texts))]
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts)), "utf-8")
    return path


def _run(capsys, model_dir: Path, src: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["explain", "--input", str(src), "--out", str(out), "--model", str(model_dir), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error(code: int, err: str, *needles: str) -> str:
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.strip() and not _PROGRESS.search(x)]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("attn-plugins: error:"), (code, lines)
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(input, output directory) of one complete run with method raw, copied by each test."""
    base = tmp_path_factory.mktemp("corpus")
    src, out = _input(base / "in.jsonl"), base / "run"
    code = main(["explain", "--input", str(src), "--out", str(out), "--model", str(model_dir), "--methods", "raw"])
    assert code == 0
    return src, out


def _resume(capsys, model_dir, finished_run, tmp_path, damage) -> tuple[int, str, str, Path]:
    src, out = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    damage(copy)
    return (*_run(capsys, model_dir, src, copy, "--methods", "raw"), copy)


def test_invalid_utf8_in_the_input(capsys, model_dir, tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "the movie"}\n{"text": "caf\xe9 bad"}\n')
    code, _, err = _run(capsys, model_dir, src, tmp_path / "run", "--methods", "raw")
    _one_error(code, err, "in.jsonl:2", "utf-8")
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("key", ["id", "text"])
def test_a_lone_surrogate_in_the_input(capsys, model_dir, tmp_path, key) -> None:
    src = tmp_path / "in.jsonl"
    line = {"id": "a", "text": "the movie"} | {key: "bad \\ud800"}  # valid JSON, no Unicode text
    src.write_text('{"text": "fine"}\n' + json.dumps(line).replace("\\\\", "\\") + "\n", "utf-8")
    code, _, err = _run(capsys, model_dir, src, tmp_path / "run", "--methods", "raw")
    _one_error(code, err, "in.jsonl:2", f"the {key} holds a lone surrogate")
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_gpu_count_that_is_no_finite_number(capsys, model_dir, tmp_path, value) -> None:
    src = _input(tmp_path / "in.jsonl")
    code, _, err = _run(capsys, model_dir, src, tmp_path / "run", "--engine", "ray", "--num-gpus-per-worker", value)
    _one_error(code, err, "--num-gpus-per-worker must be a finite number >= 0")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_folder_or_a_missing_input_is_one_line_for_both_engines(capsys, model_dir, tmp_path, engine) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    _input(folder / "a.jsonl")
    _input(folder / "b.jsonl")  # the same ids again
    code, _, err = _run(capsys, model_dir, folder, tmp_path / "run", "--engine", engine)
    _one_error(code, err, f"{folder}: is a folder", "cat ")
    code, _, err = _run(capsys, model_dir, tmp_path / "nope.jsonl", tmp_path / "run", "--engine", engine)
    _one_error(code, err, "nope.jsonl: no such file")
    assert not (tmp_path / "run").exists()


def test_resume_with_a_row_edited_to_the_wrong_type(capsys, model_dir, finished_run, tmp_path) -> None:
    def damage(d: Path) -> None:
        shard = shard_files(d)[0]
        rows = [json.loads(x) for x in shard.read_text("utf-8").splitlines()]
        rows[1]["line"] = "two"
        shard.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")

    code, _, err, _ = _resume(capsys, model_dir, finished_run, tmp_path, damage)
    _one_error(code, err, f"{shard_files(finished_run[1])[0].name}:2", "'line' is \"two\", not an integer")


@pytest.mark.parametrize("content", [b"\xff\xfe{", b"[]"], ids=["not-utf8", "a-list"])
def test_damaged_manifest(capsys, model_dir, finished_run, tmp_path, content) -> None:
    code, _, err, _ = _resume(
        capsys, model_dir, finished_run, tmp_path, lambda d: (d / "manifest.json").write_bytes(content)
    )
    _one_error(code, err, "manifest.json", "not a run manifest")


def test_invalid_utf8_in_the_results(capsys, model_dir, finished_run, tmp_path) -> None:
    def damage(d: Path) -> None:
        (d / "shards" / "zz-000000.jsonl").write_bytes(b'{"id": "zz\xff"}\n')

    code, _, err, _ = _resume(capsys, model_dir, finished_run, tmp_path, damage)
    _one_error(code, err, "zz-000000.jsonl:1", "not utf-8")


def _repaired(code: int, out: str, copy: Path) -> dict:
    assert code == 0
    ids = [r["id"] for r in load_results(copy)]
    assert ids == [f"ex{i}" for i in range(len(TEXTS))]
    assert sum(len(p.read_text().splitlines()) for p in shard_files(copy)) == len(TEXTS)  # no row twice
    for row in load_results(copy):
        ap.load(copy / row["record"]).validate()
    return json.loads(out.strip().splitlines()[-1])


def test_resume_with_a_duplicated_results_line(capsys, model_dir, finished_run, tmp_path) -> None:
    def damage(d: Path) -> None:
        shard = shard_files(d)[0]
        with open(shard, "a", encoding="utf-8") as fh:
            fh.write(shard.read_text("utf-8").splitlines()[0] + "\n")

    code, out, _, copy = _resume(capsys, model_dir, finished_run, tmp_path, damage)
    assert _repaired(code, out, copy)["repaired"] == 1


@pytest.mark.parametrize("damage", ["deleted", "corrupt", "zeros"])
def test_resume_with_a_damaged_record_file(capsys, model_dir, finished_run, tmp_path, damage) -> None:
    def hurt(d: Path) -> None:
        row = next(r for r in load_results(d) if r["id"] == "ex2")
        path = d / row["record"]
        if damage == "deleted":
            path.unlink()
        elif damage == "zeros":
            path.write_bytes(bytes(path.stat().st_size))  # same size: accepted and lost before
        else:
            path.write_bytes(b"not a record")

    code, out, _, copy = _resume(capsys, model_dir, finished_run, tmp_path, hurt)
    summary = _repaired(code, out, copy)
    assert (summary["explained"], summary["repaired"]) == (1, 1)


def test_resume_of_an_intact_run_redoes_nothing(capsys, model_dir, finished_run, tmp_path) -> None:
    code, out, _, _ = _resume(capsys, model_dir, finished_run, tmp_path, lambda d: None)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["explained"] == 0


def test_results_are_strict_json(finished_run) -> None:
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    _, out = finished_run
    for shard in shard_files(out):
        for line in shard.read_text("utf-8").splitlines():
            json.loads(line, parse_constant=refuse)


class _Seven:
    name = "cli_seven"

    def __call__(self, record, position="first", kind=None, **_):
        import numpy as np

        return np.linspace(0.1, 0.7, record.attentions[kind or record.default_kind].shape[-1] + 3)


@ap.hookimpl
def attn_plugins_register_methods(register):
    register("cli_seven", _Seven())


def test_method_with_the_wrong_number_of_scores_exits_2_naming_it(capsys, model_dir, tmp_path) -> None:
    import sys

    ap.register_plugin(sys.modules[__name__], name="cli_corpus_plugin")
    src = _input(tmp_path / "in.jsonl", TEXTS[:2])
    code, out, err = _run(capsys, model_dir, src, tmp_path / "run", "--methods", "cli_seven")
    _one_error(
        code,
        err,
        "2 of 2 examples failed",
        "method 'cli_seven' of plugin",
        "gave scores of shape (9,) for 6 key tokens",
    )
    assert json.loads(out.strip().splitlines()[-1])["failed"] == 2  # the summary still comes out


def test_over_long_line_fails_alone_and_again_on_resume(capsys, model_dir, tmp_path) -> None:
    src = _input(tmp_path / "in.jsonl", ["the movie was great", LONG, "hello"], ids=["a", "too-long", "c"])
    out = tmp_path / "run"
    code, _, err = _run(capsys, model_dir, src, out, "--methods", "raw")
    _one_error(code, err, "1 of 3 examples failed", "in.jsonl:2 id 'too-long'")
    assert [r["id"] for r in load_results(out)] == ["a", "c"]  # the run went on
    assert [e["id"] for e in load_errors(out)] == ["too-long"]
    code, _, err = _run(capsys, model_dir, src, out, "--methods", "raw")
    _one_error(code, err, "1 of 1 examples failed", "in.jsonl:2 id 'too-long'")


def test_truncate_explains_the_over_long_line_and_resume_finishes(capsys, model_dir, tmp_path) -> None:
    src = _input(tmp_path / "in.jsonl", ["the movie was great", LONG, "hello"], ids=["a", "too-long", "c"])
    out = tmp_path / "run"
    code, _, _ = _run(capsys, model_dir, src, out, "--methods", "raw")
    assert code == 2
    code, _, _ = _run(capsys, model_dir, src, out, "--methods", "raw", "--truncate")  # the resume finishes it
    assert code == 0
    row = next(r for r in load_results(out) if r["id"] == "too-long")
    assert len(row["tokens"]) == 64 and row["truncated"] is True
    assert ap.load(out / row["record"]).meta.get("truncated") is True
    assert load_errors(out) == []
