"""Views without a browser: payloads, escaping, bertviz bridging, heatmaps, highlighting, summaries, report."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from helpers.records import (
    XSS_TOKENS,
    captured_decoder,
    captured_encoder,
    captured_seq2seq,
    page_params,
    softmax_record,
    xss_record,
)

import attn_plugins as ap
from attn_plugins import AttentionRecord, InputError, MissingCaptureError, RecordValidationError
from attn_plugins.views import payload
from attn_plugins.views.attention import HEAD_SVG_LIMIT
from attn_plugins.views.bertviz_js import bertviz_source
from attn_plugins.views.page import script_code, script_json

# ---------------------------------------------------------------------------- payloads


def test_weights_payload_round_trips_within_one_quantization_step() -> None:
    att = softmax_record(n=9, layers=3, heads=2).attentions["self"]
    p = payload.encode_weights(att, threshold=0.0)
    back = payload.decode(p)
    assert back.shape == tuple(att.shape)
    # Steps are uniform in sqrt(w): finest near 0, so no small weight collapses to 0.
    assert np.abs(np.sqrt(back) - np.sqrt(att.numpy())).max() <= 0.5 / 255 + 1e-6
    assert (back[att.numpy() > 1e-5] > 0).all()
    assert p["dtype"] == "u8sqrt" and p["codec"] in ("deflate", "raw")


def test_threshold_zeroes_small_weights_and_shrinks_the_payload() -> None:
    g = torch.Generator().manual_seed(1)
    att = torch.softmax(torch.randn(2, 4, 64, 64, generator=g), -1)
    loose = payload.encode_weights(att, threshold=0.0)
    tight = payload.encode_weights(att, threshold=0.05)
    back = payload.decode(tight)
    assert (back[att.numpy() < 0.05] == 0).all()
    assert (back[att.numpy() >= 0.06] > 0).all()
    assert len(tight["data"]) < len(loose["data"])


@pytest.mark.parametrize("bad", [-0.1, 1.0, "x", None])
def test_bad_threshold_is_a_clear_error(bad: object) -> None:
    with pytest.raises(InputError, match="threshold"):
        payload.encode_weights(torch.ones(1, 1, 1, 1), threshold=bad)  # type: ignore[arg-type]


def test_non_finite_payloads_are_rejected() -> None:
    with pytest.raises(InputError, match="NaN"):
        payload.encode_weights(torch.tensor([[float("nan")]]))
    with pytest.raises(InputError, match="NaN"):
        payload.encode_floats(torch.tensor([float("inf")]))


def test_float_payload_is_exact_float32() -> None:
    v = torch.randn(2, 3, 5, 4)
    assert np.array_equal(payload.decode(payload.encode_floats(v)), v.numpy())


def test_equal_payloads_are_written_once_per_page() -> None:
    rec = softmax_record()
    views = ap.views.head_view(rec).fragments + ap.views.model_view(rec).fragments
    page = ap.views.View(views, "both").html
    assert page.count('id="attn-data-u8sqrt-') == 1
    assert len(page_params(page)) == 2


def test_decode_rejects_foreign_objects() -> None:
    with pytest.raises(InputError):
        payload.decode({"data": ""})


# ---------------------------------------------------------------------------- escaping


def test_script_json_cannot_end_its_script_block_and_still_parses() -> None:
    obj = {"t": XSS_TOKENS + ["\u2028", "a&b"]}
    text = script_json(obj)
    for bad in ("<", ">", "&", "\u2028"):
        assert bad not in text
    assert json.loads(text) == obj


def test_inline_code_with_a_closing_script_tag_is_refused() -> None:
    with pytest.raises(InputError):
        script_code("var s = '</script>';")
    with pytest.raises(InputError):
        script_code("<!-- x")


@pytest.mark.parametrize("view", ["head_view", "model_view", "neuron_view"])
def test_injected_tokens_reach_the_page_only_as_escaped_json(view: str) -> None:
    page = getattr(ap.views, view)(xss_record()).html
    for tok in XSS_TOKENS[:3]:
        assert tok not in page
    # Outside the JSON blocks and the inlined scripts there is no markup but ours.
    assert "onerror" not in re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.DOTALL)
    tokens = page_params(page)[0]["attention"]
    texts = tokens["all"]["left_text"] if view == "neuron_view" else tokens[0]["left_text"]
    assert texts[1:4] == XSS_TOKENS[:3]


def test_bertviz_own_output_carries_the_raw_injection_that_ours_escapes() -> None:
    from bertviz import head_view as bertviz_head_view

    rec = xss_record()
    theirs = bertviz_head_view([a.unsqueeze(0) for a in rec.attentions["self"]], rec.tokens, html_action="return").data
    assert XSS_TOKENS[0] in theirs
    assert XSS_TOKENS[0] not in ap.views.head_view(rec).html


def test_repr_html_is_an_isolated_frame_with_escaped_source() -> None:
    frame = ap.views.head_view(xss_record())._repr_html_()
    assert frame.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in frame
    assert "<script" not in frame  # the whole page is an attribute value


def test_pages_load_nothing_from_the_network() -> None:
    for page in (ap.views.head_view(softmax_record()).html, ap.views.neuron_view(softmax_record()).html):
        assert "cdnjs" not in page
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
        assert 'http-equiv="Content-Security-Policy" content="default-src &#x27;none&#x27;' in page


def test_bertviz_scripts_are_adapted_not_copied() -> None:
    for view in ("head_view", "model_view", "neuron_view"):
        code = bertviz_source(view)
        assert "require.config" not in code and "attnParams" in code
        assert "bertviz_params" not in code


# ---------------------------------------------------------------------------- head / model / neuron views


def test_encoder_decoder_views_pass_each_kind_its_own_layers() -> None:
    rec = captured_seq2seq()
    page = ap.views.head_view(rec).html
    params = page_params(page)
    assert [p["attention"][0]["name"] for p in params] == ["Encoder", "Decoder", "Cross"]
    assert [p["include_layers"] for p in params] == [[0, 1, 2], [0, 1], [0, 1]]
    cross = params[2]["attention"][0]
    assert cross["left_text"] == rec.target_tokens and cross["right_text"] == rec.tokens
    assert payload.decode(cross["attn"]).shape == tuple(rec.attentions["cross"].shape)
    model = page_params(ap.views.model_view(rec).html)
    assert [p["include_heads"] for p in model] == [[0, 1, 2, 3], [0, 1], [0, 1]]


def test_kinds_sharing_layers_become_one_view_with_a_filter() -> None:
    rec = captured_seq2seq().select(layers=[0, 1])
    page = ap.views.head_view(rec).html
    params = page_params(page)
    assert len(params) == 1 and [a["name"] for a in params[0]["attention"]] == ["Encoder", "Decoder", "Cross"]
    assert '<select id="filter">' in page


def test_views_use_original_layer_and_head_numbers_after_select() -> None:
    rec = softmax_record(layers=4, heads=5).select(layers=[1, 3], heads=[0, 4])
    params = page_params(ap.views.model_view(rec, layers=[3], heads=[4]).html)[0]
    assert params["include_layers"] == [3] and params["include_heads"] == [4]
    got = payload.decode(params["attention"][0]["attn"])
    assert np.allclose(got[0, 0], rec.attentions["self"][1, 1].numpy(), atol=1 / 255)


def test_view_arguments_are_checked() -> None:
    rec = softmax_record()
    with pytest.raises(InputError, match="no 'cross'"):
        ap.views.head_view(rec, kind="cross")
    with pytest.raises(InputError, match="unknown attention kind"):
        ap.views.head_view(rec, kind=["selff"])
    with pytest.raises(InputError, match="layer 7 out of range"):
        ap.views.head_view(rec, layers=[7])
    with pytest.raises(InputError, match="the layer selection is empty"):
        ap.views.model_view(rec, layers=[])
    with pytest.raises(InputError, match="head 9 out of range"):
        ap.views.head_view(rec, heads=[9])
    with pytest.raises(InputError, match="renderer"):
        ap.views.model_view(rec, renderer="webgl")
    with pytest.raises(InputError, match="display_mode"):
        ap.views.model_view(rec, display_mode="blue")
    with pytest.raises(InputError, match="AttentionRecord"):
        ap.views.head_view({"tokens": ["a"]})  # type: ignore[arg-type]


def test_invalid_records_are_refused_with_the_field_named() -> None:
    bad = AttentionRecord(tokens=["a", "b"], attentions={"self": torch.full((1, 1, 2, 2), 0.9)})
    with pytest.raises(RecordValidationError, match="sum to 1"):
        ap.views.head_view(bad)


def test_long_inputs_switch_to_canvas() -> None:
    n = int((HEAD_SVG_LIMIT / 3) ** 0.5) + 2
    long = softmax_record(n=n, layers=1, heads=3)
    assert 'data-renderer="canvas"' in ap.views.head_view(long).html
    assert 'data-renderer="svg"' in ap.views.head_view(softmax_record()).html
    assert 'data-renderer="canvas"' in ap.views.model_view(softmax_record(), renderer="canvas").html
    assert 'data-renderer="svg"' in ap.views.head_view(long, renderer="svg").html


def test_neuron_view_needs_queries_and_keys() -> None:
    rec = AttentionRecord(tokens=["a", "b"], attentions={"self": torch.full((1, 1, 2, 2), 0.5)})
    with pytest.raises(MissingCaptureError, match="qk=True"):
        ap.views.neuron_view(rec)


def test_neuron_view_feeds_the_record_vectors_and_causality() -> None:
    rec = captured_decoder()
    params = page_params(ap.views.neuron_view(rec).html)[0]
    data = params["attention"]["all"]
    assert np.array_equal(payload.decode(data["queries"]), rec.queries["self"].numpy())
    assert np.array_equal(payload.decode(data["keys"]), rec.keys["self"].numpy())
    assert params["bidirectional"] is False and params["layer"] == 0 and params["head"] is None
    # layers= and heads= choose what the menus offer: the vectors and weights of exactly those
    params = page_params(ap.views.neuron_view(rec, layers=[1], heads=[2]).html)[0]
    data = params["attention"]["all"]
    assert np.array_equal(payload.decode(data["queries"]), rec.queries["self"][1:2, 2:3].numpy())
    assert np.array_equal(payload.decode(data["keys"]), rec.keys["self"][1:2, 2:3].numpy())
    assert np.allclose(payload.decode(data["attn"]), rec.attentions["self"][1:2, 2:3].numpy(), atol=1 / 255)
    assert params["layer"] == 0 and params["head"] == 0
    assert page_params(ap.views.neuron_view(captured_encoder()).html)[0]["bidirectional"] is True
    with pytest.raises(InputError, match="head 9 out of range"):
        ap.views.neuron_view(rec, heads=9)
    sub = rec.select(heads=[1, 3])
    got = payload.decode(page_params(ap.views.head_view(sub, heads=[3]).html)[0]["attention"][0]["attn"])
    assert np.allclose(got, rec.attentions["self"][:, 3:4].numpy(), atol=1 / 255)


def test_save_writes_html_and_refuses_other_formats(tmp_path) -> None:
    view = ap.views.model_view(softmax_record())
    out = view.save(tmp_path / "m.html")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(InputError, match="heatmap"):
        view.save(tmp_path / "m.png")
    with pytest.raises(InputError, match="html"):
        view.save(tmp_path / "m.txt")


# ---------------------------------------------------------------------------- heatmap


def test_heatmap_matrix_is_the_chosen_layer_and_head_or_aggregate() -> None:
    rec = softmax_record(layers=3, heads=4)
    att = rec.attentions["self"]
    assert np.allclose(ap.views.heatmap(rec, layers=2, heads=1).matrix, att[2, 1].numpy())
    assert np.allclose(ap.views.heatmap(rec, layers=0).matrix, att[0].mean(0).numpy())
    assert np.allclose(ap.views.heatmap(rec, head_reduce="max").matrix, att.amax(1).mean(0).numpy())
    assert np.allclose(
        ap.views.heatmap(rec, layers=[0, 2], layer_reduce="max").matrix, att[[0, 2]].mean(1).amax(0).numpy()
    )
    assert ap.views.heatmap(rec, layers=[0, 2], heads=1).title == "self attention, mean of layers 0, 2, head 1"
    sub = rec.select(layers=[2], heads=[3])
    assert np.allclose(ap.views.heatmap(sub, layers=2, heads=3).matrix, att[2, 3].numpy())


def test_heatmap_arguments_are_checked() -> None:
    rec = softmax_record()
    with pytest.raises(InputError, match="layer 5 out of range"):
        ap.views.heatmap(rec, layers=5)
    with pytest.raises(InputError, match="median"):
        ap.views.heatmap(rec, head_reduce="median")
    with pytest.raises(InputError, match="head True is not an integer"):
        ap.views.heatmap(rec, heads=[True])
    with pytest.raises(InputError, match="one attention kind"):
        ap.views.heatmap(captured_seq2seq(), kind=["encoder", "cross"])
    with pytest.raises(InputError, match="colormap"):
        ap.views.heatmap(rec, cmap="no-such-map")
    with pytest.raises(InputError, match="scale"):
        ap.views.heatmap(rec, scale="log")
    with pytest.raises(InputError, match="no 'cross'"):
        ap.views.heatmap(rec, kind="cross")


def test_heatmap_exports_png_svg_pdf_and_html(tmp_path) -> None:
    view = ap.views.heatmap(xss_record(), layers=1, heads=0, annotate=True)
    assert view.save(tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert view.save(tmp_path / "h.pdf").read_bytes()[:5] == b"%PDF-"
    svg = view.save(tmp_path / "h.svg").read_text(encoding="utf-8")
    root = ET.fromstring(svg)
    texts = {"".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert XSS_TOKENS[0] in texts and XSS_TOKENS[4] in texts  # shown literally, '$' not parsed as math
    page = view.save(tmp_path / "h.html").read_text(encoding="utf-8")
    assert "<svg" in page and XSS_TOKENS[0] not in page
    with pytest.raises(InputError, match="gif"):
        view.save(tmp_path / "h.gif")


def test_heatmap_of_cross_attention_and_without_special_tokens() -> None:
    rec = captured_seq2seq()
    view = ap.views.heatmap(rec, kind="cross", layers=1, heads=0)
    assert view.matrix.shape == (len(rec.target_tokens), len(rec.tokens))
    enc = captured_encoder()
    assert ap.views.heatmap(enc, drop_special=True).matrix.shape == (len(enc.tokens) - 2,) * 2


# ---------------------------------------------------------------------------- text highlighting


def test_text_highlight_colours_by_sign_and_escapes_tokens(tmp_path) -> None:
    rec = xss_record()
    scores = np.linspace(-1, 1, len(rec.tokens))
    html = ap.views.text(rec, scores, label="rollout").html
    assert html.count('class="attn-tok"') == len(rec.tokens)
    assert XSS_TOKENS[0] not in html and "&lt;/script&gt;&lt;img" in html
    assert "rgba(30,136,229,0.850)" in html and "rgba(255,13,87,0.850)" in html
    assert ap.views.text(rec, torch.tensor(scores)).save(tmp_path / "t.png").stat().st_size > 0


def test_side_by_side_has_one_row_per_method(tmp_path) -> None:
    tokens = ["a", "good", "film"]
    view = ap.views.side_by_side(tokens, {"rollout": [0.1, 0.5, 0.4], "<b>grad</b>": np.array([-1.0, 0.0, 2.0])})
    html = view.html
    assert html.count("<tr>") == 2 and "&lt;b&gt;grad&lt;/b&gt;" in html
    svg = view.save(tmp_path / "s.svg").read_text(encoding="utf-8")
    assert "<b>grad</b>" not in svg and "&lt;b&gt;grad&lt;/b&gt;" in svg


def test_text_views_check_their_scores() -> None:
    tokens = ["a", "b"]
    with pytest.raises(InputError, match="3 values for 2 tokens"):
        ap.views.text(tokens, [1, 2, 3])
    with pytest.raises(InputError, match="1-D"):
        ap.views.text(tokens, [[1, 2]])
    with pytest.raises(InputError, match="NaN"):
        ap.views.text(tokens, [1, float("nan")])
    with pytest.raises(InputError, match="numbers"):
        ap.views.text(tokens, ["x", "y"])
    with pytest.raises(InputError, match="non-empty mapping"):
        ap.views.side_by_side(tokens, {})
    with pytest.raises(InputError, match="AttentionRecord or a list"):
        ap.views.text("a b", [1, 2])
    with pytest.raises(InputError, match="no tokens"):
        ap.views.text([], [])


# ---------------------------------------------------------------------------- per-head summary


def _record_from(att: torch.Tensor, **kw) -> AttentionRecord:
    n = att.shape[-1]
    return AttentionRecord(tokens=[f"t{i}" for i in range(n)], attentions={"self": att}, **kw)


def test_summary_of_identity_previous_and_uniform_heads() -> None:
    n = 5
    eye = torch.eye(n)
    prev = torch.zeros(n, n)
    prev[0, 0] = 1
    prev[torch.arange(1, n), torch.arange(0, n - 1)] = 1
    uniform = torch.full((n, n), 1 / n)
    rec = _record_from(torch.stack([eye, prev, uniform])[None], special_tokens_mask=[True] + [False] * (n - 1))
    s = ap.views.head_summary(rec).values
    assert np.allclose(s["entropy"][0], [0, 0, 1])
    assert np.allclose(s["self"][0], [1, 1 / n, 1 / n])
    assert np.allclose(s["previous"][0], [0, 1, 1 / n])
    assert np.allclose(s["special"][0], [1 / n, 2 / n, 1 / n])


def test_summary_without_special_mask_and_for_cross_attention_is_nan() -> None:
    s = ap.views.head_summary(_record_from(torch.full((1, 1, 3, 3), 1 / 3))).values
    assert np.isnan(s["special"]).all()
    cross = ap.views.head_summary(captured_seq2seq(), "cross").values
    assert np.isnan(cross["self"]).all() and np.isfinite(cross["special"]).all()
    html = ap.views.head_summary(captured_seq2seq(), "cross").fragment().body
    assert "n/a" in html
    with pytest.raises(InputError, match="no 'decoder'"):
        ap.views.head_summary(softmax_record(), "decoder")


def test_summary_aligns_query_suffixes_to_the_end_of_the_keys() -> None:
    # Two queries over four keys (a generation step): query 0 is position 2, query 1 is position 3.
    att = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])[None, None]
    s = ap.views.head_summary(_record_from(att)).values
    assert np.allclose(s["self"], 0.5) and np.allclose(s["previous"], 0.5)


# ---------------------------------------------------------------------------- report


def test_report_holds_text_output_scores_views_and_summary() -> None:
    rec = captured_encoder()
    scores = {"rollout": np.arange(len(rec.tokens), dtype=float), "grad": -np.ones(len(rec.tokens))}
    page = ap.views.report(rec, scores, model_name="<b>tiny</b>").html
    assert "&lt;b&gt;tiny&lt;/b&gt;" in page and "<b>tiny</b>" not in page
    assert "predicted LABEL_" in page and "a good film, really" in page  # class names from config.id2label
    for view in ("text", "head_view", "model_view", "neuron_view", "head_summary"):
        assert f'data-view="{view}"' in page
    assert page.count('data-stat="entropy"') == 1


def test_report_of_several_records_splits_the_scores() -> None:
    recs = [softmax_record(n=5), softmax_record(n=7, seed=1)]
    page = ap.views.report(recs, {"m": [np.ones(5), np.ones(7)]}, output_summary=["yes", "no"]).html
    assert "Example 2" in page and page.count('data-view="text"') == 2
    with pytest.raises(InputError, match="one score array per record"):
        ap.views.report(recs, {"m": [np.ones(5)]})
    with pytest.raises(InputError, match="5 values for 7 tokens"):
        ap.views.report(recs, {"m": [np.ones(5), np.ones(5)]})
    with pytest.raises(InputError, match="2 records"):
        ap.views.report(recs, output_summary=["one"])
    with pytest.raises(InputError, match="non-empty"):
        ap.views.report([])


def test_report_of_encoder_decoder_has_every_kind() -> None:
    page = ap.views.report(captured_seq2seq(), model_name="tiny-bart").html
    assert 'data-role="target"' in page
    assert [p["attention"][0]["name"] for p in page_params(page) if "include_layers" in p and "heads" in p] == [
        "Encoder",
        "Decoder",
        "Cross",
    ]
    assert page.count('data-view="head_summary"') == 3


def test_describe_output_of_classifier_and_language_model() -> None:
    classifier = captured_encoder()
    assert ap.views.describe_output(classifier).startswith("predicted LABEL_")  # the config's class names
    del classifier.meta["id2label"]
    assert ap.views.describe_output(classifier).startswith("predicted label ")  # without names: the index
    assert ap.views.describe_output(captured_decoder()).startswith("next token id")
    assert ap.views.describe_output(softmax_record()) is None


# ---------------------------------------------------------------------------- plugin registration


def test_views_are_registered_as_built_ins() -> None:
    infos = {i.name: i for i in ap.plugins() if i.kind == "view"}
    for name in ("head_view", "model_view", "neuron_view", "heatmap", "text", "side_by_side", "report"):
        assert infos[name].distribution == "attn-plugins" and infos[name].plugin == "attn_plugins.views.plugin"
    from attn_plugins.plugins import get_component

    assert get_component("view", "heatmap") is ap.views.heatmap
    view = get_component("view", "text")(softmax_record(), scores=np.ones(6))
    assert view.html.startswith("<!DOCTYPE html>")


def test_vendored_libraries_ship_with_their_licenses_and_are_inlined() -> None:
    from importlib import resources

    vendor = resources.files("attn_plugins.views").joinpath("vendor")
    names = {p.name for p in vendor.iterdir()}
    for lib in ("d3", "jquery", "requirejs"):
        assert f"LICENSE-{lib}.txt" in names
    page = ap.views.head_view(softmax_record()).html
    for js in ("d3-5.7.0.min.js", "jquery-3.7.1.min.js", "require-2.3.6.js"):
        assert vendor.joinpath(js).read_text(encoding="utf-8")[:200] in page
    # Pages without bertviz front ends carry no vendored code at all.
    assert "d3js.org" not in ap.views.model_view(softmax_record(), renderer="canvas").html


def test_heatmap_sqrt_scale_uses_a_power_norm() -> None:
    from matplotlib.colors import PowerNorm

    fig = ap.views.heatmap(softmax_record(), scale="sqrt").figure()
    assert isinstance(fig.axes[0].images[0].norm, PowerNorm)
    assert not isinstance(ap.views.heatmap(softmax_record()).figure().axes[0].images[0].norm, PowerNorm)


def test_heatmap_of_a_long_input_labels_every_nth_token() -> None:
    rec = softmax_record(n=200, layers=1, heads=1)
    fig = ap.views.heatmap(rec).figure()
    ax = fig.axes[0]
    assert len(ax.get_xticks()) == 67 and len(ax.get_yticks()) == 67  # every 3rd of 200
    assert ax.get_xticklabels()[1].get_text() == rec.tokens[3]


def test_neuron_view_refuses_inputs_too_long_for_svg() -> None:
    n = int(HEAD_SVG_LIMIT**0.5) + 1
    with pytest.raises(InputError, match="neuron view .* SVG lines"):
        ap.views.neuron_view(softmax_record(n=n, layers=1, heads=1))


def test_layers_missing_from_one_kind_name_the_kind_and_the_way_out() -> None:
    rec = captured_seq2seq()
    with pytest.raises(InputError, match="'decoder' attention: layer 2 out of range.*kind="):
        ap.views.head_view(rec, layers=[2])
    page = ap.views.head_view(rec, layers=[2], kind="encoder").html
    assert [p["include_layers"] for p in page_params(page)] == [[2]]
