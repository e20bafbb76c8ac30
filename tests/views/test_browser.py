"""Every kind of page opened from file:// in headless Chromium with networking off.

Each test waits for the drawing, counts the SVG or canvas elements it expects, requires a silent console,
checks that injected tokens ran nothing and loaded nothing, and saves a screenshot to test-artifacts/.
Chromium is Debian's (``apt-get install chromium``), driven by the ``playwright`` package without
``playwright install``; set ATTN_PLUGINS_CHROMIUM to use another binary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.records import (
    XSS_TOKENS,
    captured_decoder,
    captured_encoder,
    captured_seq2seq,
    softmax_record,
    xss_record,
)

import attn_plugins as ap

CHROMIUM = os.environ.get("ATTN_PLUGINS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


@dataclass
class Opened:
    """A page loaded in the browser, with everything it logged, asked for and popped up."""

    page: Any
    url: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def js(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page."""
        return self.page.evaluate(expression)

    def assert_clean(self) -> None:
        """No console error, no dialog, no injected code run, nothing fetched but the page itself."""
        assert self.console_errors == []
        assert self.dialogs == []
        assert self.js("window.__pwned") is None
        assert self.requests == [self.url]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def open_view(browser: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    contexts = []

    def _open(view: Any, ready: str, name: str | None = None) -> Opened:
        name = name or request.node.name
        path = tmp_path / f"{name}.html"
        if isinstance(view, str):
            path.write_text(view, encoding="utf-8")
        else:
            view.save(path)
        context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
        contexts.append(context)
        opened = Opened(context.new_page(), path.as_uri())

        def route(r: Any) -> None:
            # Networking is off twice over: the context is offline and every non-local request is aborted.
            if r.request.url.startswith(LOCAL_SCHEMES):
                r.continue_()
            else:
                r.abort()

        context.route("**/*", route)
        page = opened.page
        page.on("request", lambda req: opened.requests.append(req.url))
        page.on("console", lambda m: opened.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: opened.console_errors.append(f"uncaught: {e}"))
        page.on("dialog", lambda d: (opened.dialogs.append(d.message), d.dismiss()))
        page.goto(opened.url)
        # Polled from Python: wait_for_function would eval() inside the page, which its CSP forbids.
        deadline = time.monotonic() + 30
        while not page.evaluate(ready):
            assert time.monotonic() < deadline, f"the page never got ready ({ready}); console: {opened.console_errors}"
            page.wait_for_timeout(50)
        page.wait_for_timeout(150)  # let late errors and dialogs surface before the checks
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        return opened

    yield _open
    for context in contexts:
        context.close()


def _lines(root_index: int = 0) -> str:
    return f"document.querySelectorAll('.attn-view')[{root_index}].querySelectorAll('svg line').length"


# ---------------------------------------------------------------------------- encoder


def test_encoder_head_view_draws_one_line_per_weight_of_a_layer(open_view: Any) -> None:
    rec = captured_encoder()
    _, heads, n, _ = rec.attentions["self"].shape
    page = open_view(ap.views.head_view(rec), f"{_lines()} > 0")
    assert page.js(_lines()) == heads * n * n
    assert page.js("document.querySelectorAll('.attn-view select#layer option').length") == rec.num_layers
    # Switching the layer redraws without errors.
    page.page.select_option(".attn-view select#layer", "1")
    page.page.wait_for_timeout(100)
    assert page.js(_lines()) == heads * n * n
    page.assert_clean()


def test_encoder_model_view_draws_every_layer_and_head(open_view: Any) -> None:
    rec = captured_encoder()
    layers, heads, n, _ = rec.attentions["self"].shape
    page = open_view(ap.views.model_view(rec), f"{_lines()} > 0")
    assert page.js(_lines()) == layers * heads * n * n
    page.assert_clean()


def test_encoder_neuron_view_renders_query_and_key_vectors(open_view: Any) -> None:
    rec = captured_encoder()
    page = open_view(ap.views.neuron_view(rec), f"{_lines()} > 0")
    assert page.js("document.querySelectorAll('.attn-view svg').length") >= 1
    assert page.js("document.querySelectorAll('.attn-view select#att_head option').length") == rec.num_heads
    page.assert_clean()


# ---------------------------------------------------------------------------- decoder


def test_decoder_head_and_neuron_views(open_view: Any) -> None:
    rec = captured_decoder()
    _, heads, n, _ = rec.attentions["self"].shape
    head = open_view(ap.views.head_view(rec), f"{_lines()} > 0", "decoder_head_view")
    assert head.js(_lines()) == heads * n * n
    head.assert_clean()
    neuron = open_view(ap.views.neuron_view(rec), f"{_lines()} > 0", "decoder_neuron_view")
    neuron.assert_clean()


# ---------------------------------------------------------------------------- encoder-decoder


def test_encoder_decoder_head_view_has_encoder_decoder_and_cross(open_view: Any) -> None:
    rec = captured_seq2seq()
    page = open_view(ap.views.head_view(rec), f"{_lines(2)} > 0")
    expected = [int(a.shape[1] * a.shape[2] * a.shape[3]) for a in rec.attentions.values()]
    assert [page.js(_lines(i)) for i in range(3)] == expected
    # The decoder has 2 layers, the encoder 3: each view lists its own.
    options = "Array.from(document.querySelectorAll('.attn-view')).map(v => v.querySelectorAll('#layer option').length)"
    assert page.js(options) == [3, 2, 2]
    page.page.select_option(".attn-view:nth-of-type(2) select#layer", "1")
    page.page.wait_for_timeout(100)
    page.assert_clean()


def test_encoder_decoder_model_view(open_view: Any) -> None:
    rec = captured_seq2seq()
    page = open_view(ap.views.model_view(rec), f"{_lines(2)} > 0")
    expected = [int(a.numel()) for a in rec.attentions.values()]
    assert [page.js(_lines(i)) for i in range(3)] == expected
    page.assert_clean()


# ---------------------------------------------------------------------------- long inputs: canvas


def test_canvas_head_view_for_long_input(open_view: Any) -> None:
    rec = softmax_record(
        n=160, layers=2, heads=3, tokens=["[CLS]", *XSS_TOKENS, *[f"w{i}" for i in range(150)], "[SEP]"]
    )
    page = open_view(ap.views.head_view(rec), "document.querySelector('[data-rendered=\"1\"]') !== null")
    assert page.js("document.querySelectorAll('canvas').length") == 1
    assert page.js("document.querySelector('canvas').width") == len(rec.tokens)
    assert page.js("document.querySelectorAll('svg line').length") == 0
    # Some pixels are coloured: the weights were decoded and painted.
    painted = (
        "(() => { const c = document.querySelector('canvas'); "
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; "
        "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 250) n++; return n; })()"
    )
    assert page.js(painted) > len(rec.tokens)
    # Hovering shows the tokens as text; the injected ones stay inert.
    box = page.page.locator("canvas").bounding_box()
    page.page.mouse.move(box["x"] + box["width"] * 2.5 / 160, box["y"] + box["height"] * 1.5 / 160)
    assert "query 1" in page.js("document.querySelector('.attn-info').textContent")
    page.page.select_option(".attn-controls select >> nth=1", "2")
    page.assert_clean()


def test_canvas_head_view_starts_at_the_chosen_layer_and_head(open_view: Any) -> None:
    rec = softmax_record(n=30, layers=3, heads=4)
    view = ap.views.head_view(rec, renderer="canvas", layers=[2], heads=[3])
    page = open_view(view, "document.querySelector('[data-rendered=\"1\"]') !== null")
    chosen = "Array.from(document.querySelectorAll('.attn-controls select')).map(s => s.selectedOptions[0].text)"
    assert page.js(chosen) == ["2", "head 3"]
    page.assert_clean()


def test_canvas_model_view_thumbnails_and_detail(open_view: Any) -> None:
    rec = softmax_record(n=200, layers=3, heads=4)
    page = open_view(
        ap.views.model_view(rec, renderer="canvas"), "document.querySelector('[data-rendered=\"1\"]') !== null"
    )
    assert page.js("document.querySelectorAll('.attn-grid canvas').length") == 12
    # 200 tokens in a 96-pixel thumbnail: blocks of 3x3 weights, max-pooled into 67x67 pixels.
    assert page.js(
        "[document.querySelector('.attn-grid canvas').width, document.querySelector('.attn-grid canvas').height]"
    ) == [67, 67]
    page.page.locator(".attn-grid canvas >> nth=5").click()
    assert page.js("document.querySelectorAll('canvas.attn-canvas-main').length") == 1
    assert page.js("document.querySelector('canvas.attn-canvas-main').width") == 200
    page.assert_clean()


# ---------------------------------------------------------------------------- injected tokens


@pytest.mark.parametrize("view", ["head_view", "model_view", "neuron_view"])
def test_injected_tokens_show_as_text_and_run_nothing(open_view: Any, view: str) -> None:
    page = open_view(getattr(ap.views, view)(xss_record()), f"{_lines()} > 0")
    if view == "model_view":  # tokens appear in the detail panel of a clicked thumbnail
        page.js(
            "Array.from(document.querySelectorAll('svg rect')).find(r => r.style.opacity === '0')"
            ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
        )
    shown = page.js("Array.from(document.querySelectorAll('svg text')).map(t => t.textContent)")
    for tok in XSS_TOKENS[:3]:
        assert tok in shown
    assert page.js("document.querySelectorAll('img').length") == 0
    assert page.js("document.querySelectorAll('svg[onload]').length") == 0
    page.assert_clean()


def test_bertviz_own_page_runs_the_injected_token(open_view: Any) -> None:
    from bertviz import head_view as bertviz_head_view

    rec = xss_record()
    theirs = bertviz_head_view([a.unsqueeze(0) for a in rec.attentions["self"]], rec.tokens, html_action="return")
    page = open_view(theirs.data, "document.readyState === 'complete'")
    # The contrast this package fixes: bertviz's own output pops the alert (and is blank offline).
    assert "1" in page.dialogs
    assert page.js("document.querySelectorAll('svg line').length") == 0


def test_heatmap_and_text_pages_show_tokens_literally(open_view: Any) -> None:
    rec = xss_record()
    heat = open_view(ap.views.heatmap(rec, layers=1), "document.querySelector('svg') !== null", "heatmap_page")
    assert XSS_TOKENS[0] in heat.js("document.querySelector('svg').textContent")
    heat.assert_clean()
    scores = {"rollout": np.linspace(-1, 1, len(rec.tokens)), "<img src=x onerror=alert(3)>": np.ones(len(rec.tokens))}
    text = open_view(ap.views.side_by_side(rec, scores), "document.querySelector('.attn-tok') !== null", "text_page")
    assert text.js("document.querySelectorAll('.attn-tok').length") == 2 * len(rec.tokens)
    assert text.js("document.querySelectorAll('img').length") == 0
    text.assert_clean()


# ---------------------------------------------------------------------------- report


def test_report_page_renders_every_section(open_view: Any) -> None:
    rec = captured_encoder()
    scores = {"rollout": np.linspace(0, 1, len(rec.tokens)), "grad": -np.linspace(0, 1, len(rec.tokens))}
    page = open_view(
        ap.views.report(rec, scores, model_name="</script><img src=x onerror=alert(4)>"),
        "document.querySelectorAll('.attn-view svg line').length > 0 && "
        "document.querySelectorAll('[data-view=\"model_view\"] svg line').length > 0",
    )
    assert page.js("document.querySelectorAll('[data-view=\"neuron_view\"] svg').length") >= 1
    assert page.js("document.querySelectorAll('table.attn-table').length") == 4
    assert "</script><img" in page.js("document.querySelector('h1').textContent")
    page.assert_clean()


def test_report_of_encoder_decoder_renders(open_view: Any) -> None:
    ready = "Array.from(document.querySelectorAll('.attn-view')).filter(v => v.querySelector('svg line')).length >= 6"
    page = open_view(ap.views.report(captured_seq2seq(), model_name="tiny-bart"), ready)
    assert page.js("document.querySelectorAll('table.attn-table').length") == 12
    page.assert_clean()


def test_jupyter_frame_renders_the_view_inside_a_sandboxed_iframe(open_view: Any) -> None:
    rec = xss_record()
    host = f"<!DOCTYPE html><html><body><p>notebook cell</p>{ap.views.head_view(rec)._repr_html_()}</body></html>"
    page = open_view(host, "document.readyState === 'complete'")
    frame = page.page.frames[1]
    deadline = time.monotonic() + 30
    while frame.evaluate("document.querySelectorAll('svg line').length") == 0:
        assert time.monotonic() < deadline, page.console_errors
        page.page.wait_for_timeout(50)
    assert frame.evaluate("document.querySelectorAll('svg line').length") == 2 * len(rec.tokens) ** 2
    assert frame.evaluate("document.querySelectorAll('img').length") == 0
    page.assert_clean()


def test_canvas_views_of_encoder_decoder_switch_between_kinds(open_view: Any) -> None:
    rec = captured_seq2seq()
    page = open_view(
        ap.views.head_view(rec, renderer="canvas"), "document.querySelector('[data-rendered=\"1\"]') !== null"
    )
    size = "(() => { const c = document.querySelector('canvas'); return [c.height, c.width]; })()"
    assert page.js(size) == [len(rec.tokens), len(rec.tokens)]
    page.page.select_option(".attn-controls select >> nth=0", "2")  # Cross: decoder queries, encoder keys
    assert page.js(size) == [len(rec.target_tokens), len(rec.tokens)]
    assert page.js("document.querySelectorAll('.attn-controls select')[1].options.length") == 2  # its 2 layers
    page.assert_clean()


def test_a_corrupt_payload_shows_an_error_instead_of_a_blank_page(open_view: Any) -> None:
    html = ap.views.head_view(softmax_record()).html
    start = html.index('"data":"', html.index('id="attn-data-')) + len('"data":"')
    broken = html[:start] + "AAAA" + html[html.index('"', start) :]
    page = open_view(broken, "document.querySelector('.attn-error') !== null")
    assert "could not be drawn" in page.js("document.querySelector('.attn-error').textContent")
    assert page.console_errors  # the failure is reported, not swallowed


# ---------------------------------------------------------------------------- what is drawn is the record
# The page stores round(sqrt(w) * 255) and the browser squares it back, so a drawn weight is within
# (1/255)·sqrt(w) + 1/255² of the record's: 0.006 covers every w in [0, 1].
DRAWN_TOLERANCE = 0.006


def test_head_view_draws_the_weights_of_the_record(open_view: Any) -> None:
    """Every line's opacity, read back from the browser, is its weight (over the active heads)."""
    g = torch.Generator().manual_seed(0)
    att = torch.softmax(2.5 * torch.randn(2, 3, 5, 5, generator=g), -1)
    rec = ap.AttentionRecord(tokens=["[CLS]", "a", "b", "c", "[SEP]"], attentions={"self": att})
    page = open_view(ap.views.head_view(rec), f"{_lines()} > 0")
    read = """(() => {
        const view = document.querySelector('.attn-view');
        const lines = Array.from(view.querySelectorAll('svg line'));
        const heads = new Set(lines.map(l => l.parentNode.parentNode.getAttribute('head-index')));
        return {layer: view.querySelector('select#layer').value, heads: heads.size,
                lines: lines.map(l => [+l.parentNode.parentNode.getAttribute('head-index'),
                                       +l.getAttribute('left-token-index'), +l.getAttribute('right-token-index'),
                                       +l.getAttribute('stroke-opacity')])};
    })()"""
    for layer in ("0", "1"):
        page.page.select_option(".attn-view select#layer", layer)
        page.page.wait_for_timeout(100)
        drawn = page.js(read)
        assert drawn["layer"] == layer and drawn["heads"] == 3 and len(drawn["lines"]) == 3 * 5 * 5
        worst = max(
            abs(opacity * drawn["heads"] - float(att[int(layer), h, q, k])) for h, q, k, opacity in drawn["lines"]
        )
        assert worst < DRAWN_TOLERANCE, f"layer {layer}: drawn weights are off by up to {worst:.3f}"
    page.assert_clean()


def test_canvas_head_view_paints_the_weights_of_the_record(open_view: Any) -> None:
    """Each pixel's colour, turned back into a weight through the colour scale, is the record's weight."""
    rec = softmax_record(n=30, layers=2, heads=3, seed=4)
    view = ap.views.head_view(rec, renderer="canvas", layers=[1], heads=[2])
    page = open_view(view, "document.querySelector('[data-rendered=\"1\"]') !== null")
    red = page.js(
        "(() => { const c = document.querySelector('canvas.attn-canvas-main');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " const out = []; for (let i = 0; i < d.length; i += 4) out.push(d[i]); return [c.height, c.width, out]; })()"
    )
    rows, cols, values = red
    assert (rows, cols) == (30, 30)
    # Red channel = 255 - 247·sqrt(w) (the page's colour scale), so sqrt(w) = (255 - red) / 247.
    painted = ((255 - np.array(values, dtype=float)) / 247).reshape(rows, cols) ** 2
    expected = rec.attentions["self"][1, 2].double().numpy()
    worst = np.abs(painted - expected).max()
    assert worst < 0.02, f"painted weights are off by up to {worst:.3f}"
    # The hover read-out names the same weight, to 4 decimals.
    box = page.page.locator("canvas.attn-canvas-main").bounding_box()
    page.page.mouse.move(box["x"] + box["width"] * 7.5 / 30, box["y"] + box["height"] * 3.5 / 30)
    shown = float(page.js("document.querySelector('.attn-info').textContent").rsplit(": ", 1)[1])
    assert shown == pytest.approx(float(expected[3, 7]), abs=DRAWN_TOLERANCE)
    page.assert_clean()


def test_report_shows_a_plugin_view_in_a_sandbox_that_cannot_reach_the_page(open_view: Any) -> None:
    """The example plugin's table renders inside its frame; a script in a plugin view cannot touch the page."""
    from helpers import bad_plugin

    ap.register_plugin(bad_plugin, name=bad_plugin.PLUGIN_NAME)
    try:
        view = ap.views.report(softmax_record(), views=["token_table", "bad_evil_view"])
    finally:
        ap.reload_plugins()
    page = open_view(view, "document.querySelectorAll('iframe').length === 2")
    frames = page.page.frames[1:]
    assert len(frames) == 2
    deadline = time.monotonic() + 30
    while frames[0].evaluate("document.querySelectorAll('tr').length") == 0:
        assert time.monotonic() < deadline, page.console_errors
        page.page.wait_for_timeout(50)
    assert frames[0].evaluate("document.querySelectorAll('tr').length") == len(softmax_record().tokens) + 1
    assert frames[1].evaluate("document.querySelector('#evil b').textContent") == "plugin view"
    assert frames[1].evaluate("window.__pwned") == 1  # its script ran, in its own opaque-origin frame ...
    assert (
        frames[1].evaluate("(() => { try { return parent.document.title; } catch (e) { return 'blocked'; } })()")
        == "blocked"
    )
    page.assert_clean()  # ... and window.__pwned of the page itself is untouched
