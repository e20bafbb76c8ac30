"""Command-line misuse: one line on stderr, exit status 2, no traceback, no temporary file left behind.

Every case runs ``attn_plugins.cli.main`` in-process on the tiny classifier saved as a local model
directory (one case also through the installed entry point, to see the exit status and stderr a user sees).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.broken import leftovers, texts_of_lengths, unwritable_dir

import attn_plugins as ap
from attn_plugins.cli import main

TEXT = "the movie was great"
# tqdm progress bars are not error output: a corpus run may draw one before a late error.
_PROGRESS = re.compile(r"\d+%\|.*\|")


def usage_error(capsys, argv: list, *needles: str) -> str:
    """Run the command; it must exit 2 with exactly one ``attn-plugins: error:`` line holding every needle."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not _PROGRESS.search(line)]
    assert code == 2, f"exit {code}; stderr: {err}"
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    line = lines[0]
    assert line.startswith("attn-plugins: error:"), line
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    return line


def _bad_output(kind: str, tmp_path: Path, name: str) -> Path:
    if kind == "directory":
        path = tmp_path / name
        path.mkdir()
        return path
    if kind == "missing-parent":
        return tmp_path / "no-such-dir" / name
    if kind == "parent-is-a-file":
        (tmp_path / "a-file").write_text("x")
        return tmp_path / "a-file" / name
    return unwritable_dir(tmp_path) / name


OUTPUT_KINDS = ["directory", "missing-parent", "parent-is-a-file", "unwritable"]


# ---------------------------------------------------------------------------- output paths
@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_capture_output_path(classifier_dir, tmp_path, capsys, kind):
    out = _bad_output(kind, tmp_path, "out.attn")
    usage_error(capsys, ["capture", TEXT, "--model", classifier_dir, "-o", out], out.name)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_explain_output_path(classifier_dir, tmp_path, capsys, kind):
    out = _bad_output(kind, tmp_path, "report.html")
    argv = ["explain", TEXT, "--model", classifier_dir, "--methods", "raw", "--shap-evals", "0", "-o", out]
    usage_error(capsys, argv, out.name)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_view_image_path(saved_record, tmp_path, capsys, kind):
    out = _bad_output(kind, tmp_path, "heat.png")
    usage_error(capsys, ["view", saved_record, "--image", out], out.name)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["directory", "missing-parent"])
def test_view_report_output_path(saved_record, tmp_path, capsys, kind):
    out = _bad_output(kind, tmp_path, "view.html")
    usage_error(capsys, ["view", saved_record, "-o", out], out.name)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["existing-file", "parent-is-a-file", "unwritable"])
def test_corpus_out_directory(classifier_dir, tmp_path, capsys, kind):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": TEXT}) + "\n")
    if kind == "existing-file":
        out = tmp_path / "results-file"
        out.write_text("x")
    elif kind == "parent-is-a-file":
        (tmp_path / "a-file").write_text("x")
        out = tmp_path / "a-file" / "run"
    else:
        out = unwritable_dir(tmp_path) / "run"
    usage_error(
        capsys, ["explain", "--input", src, "--out", out, "--model", classifier_dir, "--methods", "raw"], out.name
    )
    assert leftovers(tmp_path) == []


def test_an_output_failure_after_the_work_is_one_line_too(saved_record, tmp_path, capsys, monkeypatch):
    """A write that fails at the end (the disk filled up) is still one line, and leaves nothing behind."""
    import attn_plugins.files as files

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    usage_error(capsys, ["view", saved_record, "-o", tmp_path / "v.html"], "v.html", "no space left")
    assert leftovers(tmp_path) == [] and not (tmp_path / "v.html").exists()


# ---------------------------------------------------------------------------- input paths
def test_view_of_a_directory(tmp_path, capsys):
    (tmp_path / "dir.attn").mkdir()
    usage_error(capsys, ["view", tmp_path / "dir.attn", "-o", tmp_path / "v.html"], "dir.attn")


def test_view_of_a_file_that_is_not_a_record(tmp_path, capsys):
    (tmp_path / "notes.attn").write_text("hello")
    usage_error(capsys, ["view", tmp_path / "notes.attn", "-o", tmp_path / "v.html"], "notes.attn")


def test_model_directory_without_config(tmp_path, capsys):
    (tmp_path / "empty-model").mkdir()
    argv = ["capture", TEXT, "--model", tmp_path / "empty-model", "-o", tmp_path / "o.attn"]
    usage_error(capsys, argv, "empty-model")  # was: ValueError: Unrecognized model


def test_model_directory_with_a_broken_config(tmp_path, capsys):
    (tmp_path / "broken-model").mkdir()
    (tmp_path / "broken-model" / "config.json").write_text("{not json")
    usage_error(
        capsys, ["capture", TEXT, "--model", tmp_path / "broken-model", "-o", tmp_path / "o.attn"], "broken-model"
    )


def test_view_image_of_a_kind_the_record_lacks(saved_record, tmp_path, capsys):
    usage_error(capsys, ["view", saved_record, "--kind", "cross", "--image", tmp_path / "k.png"], "cross", "self")


def test_view_report_of_a_kind_the_record_lacks(saved_record, tmp_path, capsys):
    """--kind cross without --image was silently ignored."""
    usage_error(capsys, ["view", saved_record, "--kind", "cross", "-o", tmp_path / "v.html"], "cross")
    assert not (tmp_path / "v.html").exists()


def test_view_report_draws_the_kind_asked_for(tmp_path, capsys):
    """The report's attention views follow --kind (they ignored it)."""
    from helpers.models import bart_seq2seq
    from helpers.records import page_params

    model, tok = bart_seq2seq()
    ap.save(ap.capture(model, tok, "the cat saw a dog", target="a dog"), tmp_path / "s2s.attn")
    assert main(["view", str(tmp_path / "s2s.attn"), "--kind", "cross", "-o", str(tmp_path / "v.html")]) == 0
    params = page_params((tmp_path / "v.html").read_text(encoding="utf-8"))
    names = {section["name"] for p in params if isinstance(p.get("attention"), list) for section in p["attention"]}
    assert names == {"Cross"}


# ---------------------------------------------------------------------------- options that were silently accepted
def test_target_on_an_encoder_only_model(classifier_dir, tmp_path, capsys):
    argv = ["capture", TEXT, "--model", classifier_dir, "--target", "le film", "-o", tmp_path / "o.attn"]
    usage_error(capsys, argv, "--target", "encoder-decoder")
    assert not (tmp_path / "o.attn").exists()


@pytest.mark.parametrize("value", [",", " , ,", ""])
def test_methods_list_without_a_method(classifier_dir, tmp_path, capsys, value):
    argv = [
        "explain",
        TEXT,
        "--model",
        classifier_dir,
        "--methods",
        value,
        "--shap-evals",
        "0",
        "-o",
        tmp_path / "r.html",
    ]
    usage_error(capsys, argv, "--methods")


def test_negative_shap_evals(classifier_dir, tmp_path, capsys):
    argv = [
        "explain",
        TEXT,
        "--model",
        classifier_dir,
        "--methods",
        "raw",
        "--shap-evals",
        "-5",
        "-o",
        tmp_path / "r.html",
    ]
    usage_error(capsys, argv, "--shap-evals", "-5")


def test_argument_errors_are_one_line(capsys):
    usage_error(capsys, ["explain", TEXT, "--shap-evals", "many"], "--shap-evals", "invalid int")
    usage_error(capsys, ["capture", TEXT], "-o/--output")
    usage_error(capsys, ["frobnicate"], "frobnicate")


def test_capture_to_a_good_path_still_works(classifier_dir, tmp_path, capsys):
    assert main(["capture", TEXT, "--model", str(classifier_dir), "-o", str(tmp_path / "ok.attn")]) == 0
    ap.load(tmp_path / "ok.attn").validate()
    assert leftovers(tmp_path) == []


def test_the_installed_command_prints_one_line_and_exits_2(classifier_dir, tmp_path):
    """Through the real entry point: what a user sees for an output path that is a directory."""
    (tmp_path / "out.attn").mkdir()
    cli = Path(sys.executable).with_name("attn-plugins")
    proc = subprocess.run(
        [str(cli), "capture", TEXT, "--model", str(classifier_dir), "-o", str(tmp_path / "out.attn")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"attn-plugins: error: cannot write {tmp_path / 'out.attn'}: it is a directory"
    ]
    assert leftovers(tmp_path) == []


def test_long_text_without_truncate_names_the_text(classifier_dir, tmp_path, capsys):
    long = texts_of_lengths([120])[0]
    argv = [
        "explain",
        TEXT,
        long,
        "--model",
        classifier_dir,
        "--methods",
        "raw",
        "--shap-evals",
        "0",
        "-o",
        tmp_path / "r.html",
    ]
    usage_error(capsys, argv, "text 2", "--truncate")


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_output_paths_are_checked_before_the_model_loads(classifier_dir, tmp_path, capsys, monkeypatch, kind):
    """A bad output path fails at once, not after the (slow) model load and capture."""
    import attn_plugins.cli as cli_module

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(cli_module, "load_model", no_model)
    out = _bad_output(kind, tmp_path, "out.attn")
    usage_error(capsys, ["capture", TEXT, "--model", classifier_dir, "-o", out], out.name)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": TEXT}) + "\n")
    run_dir = _bad_output(kind, tmp_path, "run") if kind != "directory" else tmp_path / "a-results-file"
    if kind == "directory":
        run_dir.write_text("x")  # for a corpus run the wrong thing in the way is a file
    usage_error(capsys, ["explain", "--input", src, "--out", run_dir, "--methods", "raw"], run_dir.name)


# ---------------------------------------------------------------------------- report or corpus run: not both
def test_a_text_with_input_is_refused_not_ignored(classifier_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "the film was dull"}) + "\n")
    out = tmp_path / "run"
    argv = ["explain", TEXT, "--input", src, "--out", out, "--model", classifier_dir, "--methods", "raw"]
    usage_error(capsys, argv, "--input", "not both", TEXT)
    assert not out.exists()  # nothing ran


def test_out_without_input_is_refused_not_ignored(classifier_dir, tmp_path, capsys):
    page, out = tmp_path / "r.html", tmp_path / "run"
    argv = ["explain", TEXT, "--out", out, "-o", page, "--model", classifier_dir, "--methods", "raw"]
    usage_error(capsys, argv, "--out", "needs --input")
    usage_error(capsys, ["explain", TEXT, "--engine", "ray", "-o", page, "--model", classifier_dir], "--engine")
    assert not out.exists() and not page.exists()


def test_report_options_with_input_are_refused(classifier_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": TEXT}) + "\n")
    argv = ["explain", "--input", src, "--out", tmp_path / "run", "-o", tmp_path / "r.html", "--model", classifier_dir]
    usage_error(capsys, argv, "-o/--output", "corpus run")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- texts too short to rank on
@pytest.mark.parametrize(
    ("text", "reason"), [("a", "one token besides the special ones ('a')"), ("[CLS] [SEP]", "only special tokens")]
)
def test_a_text_too_short_to_rank_names_the_text(classifier_dir, tmp_path, capsys, text, reason):
    page = tmp_path / "r.html"
    usage_error(capsys, ["explain", text, "--model", classifier_dir, "-o", page], f"the text ({text!r})", reason)
    usage_error(capsys, ["compare", "the film", text, "--model", classifier_dir], f"text 2 ({text!r})", reason)
    assert not page.exists()
    # without the reference there is nothing to rank, and the page is written
    assert main(["explain", text, "--model", str(classifier_dir), "-o", str(page), "--shap-evals", "0"]) == 0
