/* attn-plugins page runtime: reads JSON parameter blocks and decodes the compact tensor payloads. */
(function () {
  "use strict";
  if (window.attnViews) return;
  const PAYLOAD_KEY = "__attn_payload__";
  const REF_KEY = "__attn_ref__";
  // u8sqrt payloads hold round(sqrt(w) * 255): this table turns a stored byte back into the weight.
  const SQUARES = new Float32Array(256);
  for (let v = 0; v < 256; v++) SQUARES[v] = (v / 255) * (v / 255);
  const decoded = {};  // payload block id -> Promise of its tensor, decoded once per page

  function bytesOf(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  async function inflate(bytes) {
    if (typeof DecompressionStream === "undefined") {
      throw new Error("this browser lacks DecompressionStream (needs Chrome 80+, Firefox 113+, Safari 16.4+)");
    }
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  // A tensor: shape, raw values, and at(i) giving the i-th value as a number.
  async function decode(p) {
    let bytes = bytesOf(p.data);
    if (p.codec === "deflate") bytes = await inflate(bytes);
    else if (p.codec !== "raw") throw new Error("unknown payload codec " + p.codec);
    let values, at;
    if (p.dtype === "u8sqrt") {
      values = bytes;
      at = (i) => SQUARES[values[i]];
    } else if (p.dtype === "f32") {
      values = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      at = (i) => values[i];
    } else {
      throw new Error("unknown payload dtype " + p.dtype);
    }
    const n = p.shape.reduce((a, b) => a * b, 1);
    if (values.length !== n) throw new Error("payload holds " + values.length + " values for shape " + p.shape);
    return { shape: p.shape, dtype: p.dtype, values: values, at: at, squares: SQUARES };
  }

  function block(id) {
    if (!(id in decoded)) decoded[id] = decode(params(id));
    return decoded[id];
  }

  // Nested arrays of numbers, the form bertviz's own front ends read.
  function nested(t) {
    const shape = t.shape, at = t.at;
    const strides = new Array(shape.length);
    let s = 1;
    for (let d = shape.length - 1; d >= 0; d--) { strides[d] = s; s *= shape[d]; }
    function build(dim, offset) {
      const out = new Array(shape[dim]);
      if (dim === shape.length - 1) {
        for (let i = 0; i < shape[dim]; i++) out[i] = at(offset + i);
      } else {
        for (let i = 0; i < shape[dim]; i++) out[i] = build(dim + 1, offset + i * strides[dim]);
      }
      return out;
    }
    return build(0, 0);
  }

  // Replace every payload inside obj by its decoded tensor (or nested arrays when asNested).
  async function resolve(obj, asNested) {
    if (Array.isArray(obj)) return Promise.all(obj.map((x) => resolve(x, asNested)));
    if (obj === null || typeof obj !== "object") return obj;
    if (typeof obj[REF_KEY] === "string" || obj[PAYLOAD_KEY] === 1) {
      const t = typeof obj[REF_KEY] === "string" ? await block(obj[REF_KEY]) : await decode(obj);
      return asNested ? nested(t) : t;
    }
    const out = {};
    for (const key of Object.keys(obj)) out[key] = await resolve(obj[key], asNested);
    return out;
  }

  function params(id) {
    const el = document.getElementById(id);
    if (!el) throw new Error("missing parameter block " + id);
    return JSON.parse(el.textContent);
  }

  function fail(rootId, err) {
    console.error(err);
    const root = document.getElementById(rootId);
    if (root) {
      const p = document.createElement("p");
      p.className = "attn-error";
      p.textContent = "This view could not be drawn: " + err.message;
      root.appendChild(p);
    }
  }

  // Decode the parameters of one view, then hand them to its drawing function.
  function run(paramsId, rootId, asNested, draw) {
    let raw;
    try { raw = params(paramsId); } catch (err) { fail(rootId, err); return; }
    resolve(raw, asNested).then(draw).catch((err) => fail(rootId, err));
  }

  window.attnViews = { decode: decode, nested: nested, resolve: resolve, run: run, fail: fail };
})();
