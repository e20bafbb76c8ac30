"""A plugin's failure, in any path, is one error naming the component, its plugin and its distribution.

The misbehaving plugin (helpers/bad_plugin.py) registers methods that raise, return None, return too
many scores or NaN, and views that return a script or raise. Through the API they give ``ap.PluginError``;
through the command line one ``attn-plugins: error:`` line and exit status 2. A plugin view's HTML goes
into a report only inside a sandboxed frame.
"""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
from helpers.broken import small_record

import attn_plugins as ap
from attn_plugins.cli import main
from attn_plugins.zoo import tiny_tokenizer

BAD_METHODS = ["bad_raises", "bad_none", "bad_seven", "bad_nan"]
TEXT = "the movie was great"


def names_plugin(message: str, component: str) -> bool:
    return component in message and "bad_plugin" in message and "<local>" in message


def one_line_error(capsys, argv: list) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not re.search(r"\d+%\|.*\|", line)]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("attn-plugins: error:"), (code, err)
    return lines[0]


# ---------------------------------------------------------------------------- the API
@pytest.mark.parametrize("method", BAD_METHODS)
def test_attribute_blames_the_plugin(bad_plugin, method):
    with pytest.raises(ap.PluginError) as info:
        ap.attribute(small_record(), method)
    assert names_plugin(str(info.value), method), str(info.value)


@pytest.mark.parametrize("method", BAD_METHODS)
def test_explain_blames_the_plugin(classifier, bad_plugin, method):
    with pytest.raises(ap.PluginError) as info:
        ap.explain(classifier, tiny_tokenizer(), TEXT, method=method)
    assert names_plugin(str(info.value), method), str(info.value)


def test_the_wrong_number_of_rows_is_caught_too(bad_plugin):
    with pytest.raises(ap.PluginError, match=r"shape \(7,\) for 2 rows x 4 key tokens"):
        ap.attribute(small_record(), "bad_seven", position=[0, 1])


def test_compare_isolates_the_plugin(classifier, bad_plugin):
    result = ap.compare(classifier, tiny_tokenizer(), [TEXT], methods=["raw", "bad_raises"], max_evals=8)
    rows = {row["method"]: row for row in result.methods}
    assert names_plugin(rows["bad_raises"]["error"], "bad_raises")
    assert not rows["raw"].get("error")


def test_a_well_behaved_plugin_method_is_unchanged():
    """The example plugin's max_attention goes through the same checks and gives what it computes."""
    rec = small_record()
    got = ap.attribute(rec, "max_attention", position=1)  # heads averaged (attribute's default), max over layers
    assert np.allclose(got, rec.attentions["self"][:, :, 1].mean(1).amax(0).numpy())
    both = ap.attribute(rec, "max_attention", position=[1, 2], head_reduce="max")
    assert np.allclose(both, rec.attentions["self"][:, :, [1, 2]].amax(dim=(0, 1)).numpy())
    assert isinstance(ap.methods.get_method("max_attention"), ap.methods.Method)


def test_built_in_methods_are_not_wrapped():
    assert type(ap.methods.get_method("raw")).__name__ == "RawAttention"


# ---------------------------------------------------------------------------- the command line
@pytest.mark.parametrize("method", BAD_METHODS)
def test_cli_explain_blames_the_plugin(classifier_dir, bad_plugin, tmp_path, capsys, method):
    argv = ["explain", TEXT, "--model", classifier_dir, "--methods", method, "--shap-evals", "0"]
    line = one_line_error(capsys, [*argv, "-o", tmp_path / "r.html"])
    assert names_plugin(line, method), line
    assert not (tmp_path / "r.html").exists()


def test_cli_explain_with_the_shap_reference_blames_the_plugin(classifier_dir, bad_plugin, tmp_path, capsys):
    argv = ["explain", TEXT, "--model", classifier_dir, "--methods", "bad_raises", "--shap-evals", "8"]
    line = one_line_error(capsys, [*argv, "-o", tmp_path / "r.html"])
    assert names_plugin(line, "bad_raises"), line


@pytest.mark.parametrize("method", BAD_METHODS)
def test_cli_view_methods_blames_the_plugin(saved_record, bad_plugin, tmp_path, capsys, method):
    line = one_line_error(capsys, ["view", saved_record, "--methods", method, "-o", tmp_path / "v.html"])
    assert names_plugin(line, method), line


def test_cli_corpus_run_blames_the_plugin(classifier_dir, bad_plugin, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": TEXT}) + "\n")
    argv = ["explain", "--input", src, "--out", tmp_path / "run", "--model", classifier_dir, "--methods", "bad_raises"]
    line = one_line_error(capsys, argv)
    assert names_plugin(line, "bad_raises"), line


@pytest.mark.parametrize("view", ["bad_raising_view", "bad_none_view"])
def test_cli_view_with_a_failing_view_plugin_blames_it(saved_record, bad_plugin, tmp_path, capsys, view):
    line = one_line_error(capsys, ["view", saved_record, "--views", view, "-o", tmp_path / "v.html"])
    assert names_plugin(line, view), line


def test_cli_unknown_view_is_one_line(saved_record, tmp_path, capsys):
    line = one_line_error(capsys, ["view", saved_record, "--views", "nope", "-o", tmp_path / "v.html"])
    assert "unknown view(s) nope" in line and "token_table" in line


# ---------------------------------------------------------------------------- plugin views in the report
def plugin_frames(page: str, fragment: str) -> list[str]:
    return [f for f in re.findall(r"<iframe\b[^>]*>", page) if html.escape(fragment, quote=True) in f]


def test_report_isolates_third_party_view_html_in_a_sandboxed_frame(bad_plugin):
    page = ap.views.report(small_record(), views=["bad_evil_view"]).html
    assert bad_plugin.EVIL_HTML not in page, "the plugin's HTML is inserted into the page unchanged"
    frames = plugin_frames(page, bad_plugin.EVIL_HTML)
    assert len(frames) == 1, "no frame holds the plugin's HTML"
    sandbox = re.search(r'sandbox="([^"]*)"', frames[0])
    assert sandbox is not None and sandbox.group(1) == "allow-scripts"


@pytest.mark.parametrize("view", ["bad_raising_view", "bad_none_view"])
def test_report_with_a_failing_view_plugin_blames_it(bad_plugin, view):
    with pytest.raises(ap.PluginError) as info:
        ap.views.report(small_record(), views=[view])
    assert names_plugin(str(info.value), view), str(info.value)


def test_report_views_are_checked_names():
    with pytest.raises(ap.PluginError, match="no view named 'nope'"):
        ap.views.report(small_record(), views=["nope"])
    with pytest.raises(ap.InputError, match="list of registered view names"):
        ap.views.report(small_record(), views="token_table")
    with pytest.raises(ap.InputError, match="cannot hold a report"):
        ap.views.report(small_record(), views=["report"])


def test_ap_report_adds_the_example_plugin_view(classifier):
    page = ap.report(classifier, tiny_tokenizer(), TEXT, methods=["raw"], shap_evals=0, views=["token_table"])
    frames = plugin_frames(page.html, "<table><tr><th>token</th><th>score</th></tr>")
    assert len(frames) == 1 and 'sandbox="allow-scripts"' in frames[0]
