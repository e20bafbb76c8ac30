/* attn-plugins canvas views: one pixel per weight, for inputs too long for one SVG line per weight. */
(function () {
  "use strict";
  if (!window.attnViews || window.attnViews.canvasHead) return;

  // White to dark blue, indexed by sqrt(weight) * 255 so that the small weights of long inputs stay visible.
  const LUT = new Uint8ClampedArray(256 * 4);
  for (let v = 0; v < 256; v++) {
    const x = v / 255;
    LUT[4 * v] = 255 - x * 247;
    LUT[4 * v + 1] = 255 - x * 207;
    LUT[4 * v + 2] = 255 - x * 148;
    LUT[4 * v + 3] = 255;
  }

  const THUMBNAIL = 96;  // CSS pixels of a model-view thumbnail, and the most pixels it is drawn with

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k of Object.keys(attrs || {})) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text; // tokens are only ever set as text, never parsed as HTML
    return e;
  }

  function select(label, options, onChange) {
    const wrap = el("label", {}, label + " ");
    const s = el("select");
    options.forEach((o, i) => s.appendChild(el("option", { value: String(i) }, o)));
    s.addEventListener("change", () => onChange(+s.value));
    wrap.appendChild(s);
    return { wrap: wrap, select: s };
  }

  // Weights of one layer and head (or the mean over heads when head < 0), as floats in [0, 1].
  function matrix(sec, layer, head) {
    const [, H, Q, K] = sec.attn.shape;
    const v = sec.attn.values, sq = sec.attn.squares;
    const size = Q * K;
    const out = new Float32Array(size);
    const first = head >= 0 ? head : 0, last = head >= 0 ? head : H - 1;
    for (let h = first; h <= last; h++) {
      const base = (layer * H + h) * size;
      for (let i = 0; i < size; i++) out[i] += sq[v[base + i]];
    }
    if (head < 0) for (let i = 0; i < size; i++) out[i] /= H;
    return out;
  }

  // Draw one map; with maxSide, blocks of weights are max-pooled first so that thin patterns (the
  // previous-token diagonal) survive in small thumbnails instead of falling between sampled pixels.
  function paint(canvas, sec, layer, head, maxSide) {
    const [, , Q, K] = sec.attn.shape;
    const m = matrix(sec, layer, head);
    const f = maxSide ? Math.max(1, Math.ceil(Math.max(Q, K) / maxSide)) : 1;
    const rows = Math.ceil(Q / f), cols = Math.ceil(K / f);
    let img = m;
    if (f > 1) {
      img = new Float32Array(rows * cols);
      for (let i = 0; i < Q; i++) {
        const r = Math.floor(i / f) * cols;
        for (let j = 0; j < K; j++) {
          const c = r + Math.floor(j / f);
          if (m[i * K + j] > img[c]) img[c] = m[i * K + j];
        }
      }
    }
    canvas.width = cols;
    canvas.height = rows;
    const ctx = canvas.getContext("2d");
    const data = ctx.createImageData(cols, rows);
    const px = data.data;
    for (let i = 0; i < img.length; i++) {
      const c = 4 * Math.min(255, Math.round(Math.sqrt(img[i]) * 255));
      px[4 * i] = LUT[c]; px[4 * i + 1] = LUT[c + 1]; px[4 * i + 2] = LUT[c + 2]; px[4 * i + 3] = 255;
    }
    ctx.putImageData(data, 0, 0);
    return m;
  }

  // A large canvas with a hover read-out: "query token -> key token: weight".
  function detail(container, sec, layer, head) {
    const [, , Q, K] = sec.attn.shape;
    const side = Math.max(240, Math.min(720, 10 * Math.max(Q, K)));
    const canvas = el("canvas", { class: "attn-canvas-main" });
    canvas.style.width = Math.round(side * K / Math.max(Q, K)) + "px";
    canvas.style.height = Math.round(side * Q / Math.max(Q, K)) + "px";
    const info = el("div", { class: "attn-info" }, "hover over the map: query (row) \u2192 key (column)");
    const m = paint(canvas, sec, layer, head);
    canvas.addEventListener("mousemove", (ev) => {
      const r = canvas.getBoundingClientRect();
      const j = Math.min(K - 1, Math.floor((ev.clientX - r.left) / r.width * K));
      const i = Math.min(Q - 1, Math.floor((ev.clientY - r.top) / r.height * Q));
      info.textContent = "query " + i + " " + JSON.stringify(sec.left_text[i]) + " \u2192 key " + j + " " +
        JSON.stringify(sec.right_text[j]) + ": " + m[i * K + j].toFixed(4);
    });
    container.replaceChildren(canvas, info);
  }

  function legend(params) {
    return el("div", { class: "attn-legend" },
      "rows are queries, columns keys; square-root colour scale, white = 0; thumbnails show the maximum of each " +
      "block of weights, enlarged maps one pixel per weight" +
      (params.threshold > 0 ? "; weights below " + params.threshold.toFixed(4) + " omitted" : ""));
  }

  function headNames(sec) { return ["mean of heads"].concat(sec.heads.map((h) => "head " + h)); }

  function canvasHead(rootId, params) {
    const root = document.getElementById(rootId);
    const state = { sec: 0, layer: params.start.layer, head: params.start.head };
    const controls = el("div", { class: "attn-controls" });
    const area = el("div");
    root.appendChild(controls);
    root.appendChild(area);
    root.appendChild(legend(params));
    function draw() {
      const sec = params.sections[state.sec];
      detail(area, sec, state.layer, state.head);
      root.dataset.rendered = "1";
    }
    function build() {
      controls.replaceChildren();
      const sec = params.sections[state.sec];
      if (params.sections.length > 1) {
        const s = select("Attention:", params.sections.map((x) => x.name), (i) => { state.sec = i; state.layer = 0; build(); });
        s.select.value = String(state.sec);
        controls.appendChild(s.wrap);
      }
      const ls = select("Layer:", sec.layers.map(String), (i) => { state.layer = i; draw(); });
      ls.select.value = String(state.layer);
      const hs = select("Head:", headNames(sec), (i) => { state.head = i - 1; draw(); });
      hs.select.value = String(state.head + 1);
      controls.appendChild(ls.wrap);
      controls.appendChild(hs.wrap);
      draw();
    }
    build();
  }

  function canvasModel(rootId, params) {
    const root = document.getElementById(rootId);
    const state = { sec: 0 };
    const controls = el("div", { class: "attn-controls" });
    const grid = el("div", { class: "attn-grid" });
    const area = el("div");
    root.appendChild(controls);
    root.appendChild(grid);
    root.appendChild(area);
    root.appendChild(legend(params));
    function draw() {
      const sec = params.sections[state.sec];
      const [L, H] = sec.attn.shape;
      grid.replaceChildren();
      grid.style.gridTemplateColumns = "48px repeat(" + H + ", 98px)";
      grid.appendChild(el("div", { class: "attn-axis" }, ""));
      sec.heads.forEach((h) => grid.appendChild(el("div", { class: "attn-axis" }, "head " + h)));
      for (let l = 0; l < L; l++) {
        grid.appendChild(el("div", { class: "attn-axis" }, "layer " + sec.layers[l]));
        for (let h = 0; h < H; h++) {
          const c = el("canvas", { "data-layer": String(l), "data-head": String(h) });
          c.title = "layer " + sec.layers[l] + ", head " + sec.heads[h];
          paint(c, sec, l, h, THUMBNAIL);
          c.addEventListener("click", () => detail(area, sec, l, h));
          grid.appendChild(c);
        }
      }
      area.replaceChildren(el("div", { class: "attn-info" }, "click a thumbnail to enlarge it"));
      root.dataset.rendered = "1";
    }
    if (params.sections.length > 1) {
      const s = select("Attention:", params.sections.map((x) => x.name), (i) => { state.sec = i; draw(); });
      controls.appendChild(s.wrap);
    }
    draw();
  }

  window.attnViews.canvasHead = canvasHead;
  window.attnViews.canvasModel = canvasModel;
})();
