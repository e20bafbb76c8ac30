"""One attention computation per captured layer: probabilities written where they are kept, the output from them.

:func:`attend` does the work of eager attention once, for one call of the attention function:
``S = q @ k^T`` scaled, soft-capped, position bias and mask added (or sdpa's mask-less ``is_causal``), an
in-place softmax - with learned sinks the sink takes part in the softmax and its share of each row is
returned apart, so rows keep the model's exact weights - and ``output = S @ v``. The operations and their
order are eager's, so the weights equal eager ``output_attentions``. Work is in float32 (float64 for a
float64 model).

Where the probabilities go is the caller's choice, per example (:class:`Dest`): straight into a record's
``[H, Q, K]`` slice when it has the working dtype and every head, row and column (no copy at all), else
computed in a reused scratch block and copied once (cut to the real tokens, selected heads, converted to
the record's dtype). A streaming consumer gets query blocks (``on_block``) of at most ``block_bytes``.

No ``repeat_kv`` copies: with grouped-query attention the ``n_rep`` query heads of a key/value head are
adjacent, so ``[H, Q, d]`` is viewed as ``[H_kv, n_rep * Q, d]`` and multiplied with the un-repeated keys
(and the probabilities with the un-repeated values). Causal self-attention is computed in row blocks whose
keys after the block's last row are neither multiplied, masked nor exponentiated (their weights are
zeros): work eager does and throws away. In-place steps mean no autograd: gradient captures use the
out-of-place path of the adapter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

_BATCHED_MAX = 1 << 17  # elements of one example's [H, Q, K] below which a batch is computed at once
_CAUSAL_BLOCK = 128  # query rows per block of a causal module (keys after a block's last row are skipped)
_SMALL_FUTURE = 1 << 20  # causal masks up to this many elements are built once per shape and cached


@dataclass
class Dest:
    """Where one example's probabilities of one call go.

    ``probs``: ``[H_sel, Q_b, K_b]`` (any float dtype) or None (nothing kept); ``sink``: ``[H_sel, Q_b]``
    for the sink mass, or None; ``heads``: LongTensor of the selected heads or None (all); ``rows`` /
    ``cols``: ``(start, length)`` of the real query rows / key columns, or None (all of them).
    """

    probs: torch.Tensor | None
    sink: torch.Tensor | None = None
    heads: torch.Tensor | None = None
    rows: tuple[int, int] | None = None
    cols: tuple[int, int] | None = None

    def direct(self, h: int, q: int, k: int, dtype: torch.dtype) -> bool:
        """Whether the scores can be computed in place in ``probs`` (working dtype, all heads, rows, columns)."""
        p = self.probs
        return (
            p is not None
            and p.dtype == dtype
            and self.heads is None
            and tuple(p.shape) == (h, q, k)
            and p.is_contiguous()
        )


class Scratch:
    """Reusable working blocks, grown on demand (one set per capture: no allocation per layer or block)."""

    def __init__(self) -> None:
        self._t: dict[tuple[int, torch.dtype], torch.Tensor] = {}

    def get(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, slot: int = 0) -> torch.Tensor:
        """A tensor of ``shape``; the two slots never overlap (a streamed block and its compute block)."""
        n = 1
        for s in shape:
            n *= s
        t = self._t.get((slot, dtype))
        if t is None or t.numel() < n or t.device != device:
            t = self._t[(slot, dtype)] = torch.empty(n, dtype=dtype, device=device)
        return t[:n].view(shape)


@dataclass
class _Spec:
    """What turns scores into probabilities, fixed for one call."""

    scale: float
    softcap: float | None
    position_bias: torch.Tensor | None
    mask: torch.Tensor | None
    inverted: torch.Tensor | None  # ~mask for boolean masks (masked_fill_ wants "where masked")
    future: bool  # sdpa-style is_causal without a mask
    sink_col: torch.Tensor | None
    fill: float
    cache: dict | None


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    *,
    scaling: float | None,
    softcap: float | None = None,
    position_bias: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    causal_if_unmasked: bool = False,
    causal: bool = False,
    dests: list[Dest] | None = None,
    scratch: Scratch | None = None,
    block_bytes: int = 32 << 20,
    on_block: Callable[[int, int, torch.Tensor, torch.Tensor | None], None] | None = None,
    dropout: float = 0.0,
    training: bool = False,
    mask_cache: dict | None = None,
) -> torch.Tensor | None:
    """Compute the probabilities once, deliver them to ``dests`` / ``on_block``; return the output (or None).

    ``query`` [B, H, Q, d], ``key`` [B, H_kv, K, d], ``value`` [B, H_kv, K, d_v] (None: no output wanted).
    The output is ``[B, Q, H, d_v]`` (contiguous, in ``value``'s dtype), as transformers' functions return it.
    ``on_block(i0, i1, S, sink)`` receives each query block ``S`` [B, H, i1 - i0, K] (every head) and the
    sink share ``[B, H, i1 - i0]`` (or None); it must not keep them. ``causal``: the module is causal
    self-attention, so with as many queries as keys (or sdpa's mask-less ``is_causal``) a block of rows
    ``i0 .. i1`` sees keys ``< i1`` only and the rest of its rows is zero without being computed.
    """
    b_, h, q_len, d = query.shape
    h_kv, k_len = key.shape[1], key.shape[2]
    rep = h // h_kv
    work = torch.promote_types(query.dtype, torch.float32)  # float32, or float64 for a float64 model
    dests = dests if dests is not None else [Dest(None)] * b_
    scratch = scratch if scratch is not None else Scratch()
    mask = attention_mask
    inverted = None
    if mask is not None:
        mask = mask[..., :k_len]
        if mask.dtype == torch.bool:
            inverted = _inverted(attention_mask, mask, k_len, mask_cache)
    if position_bias is not None:
        position_bias = position_bias[..., :k_len]
    spec = _Spec(
        scale=scaling if scaling is not None else d**-0.5,
        softcap=softcap,
        position_bias=position_bias,
        mask=mask,
        inverted=inverted,
        future=mask is None and causal_if_unmasked and q_len > 1,
        sink_col=sinks.to(work).reshape(h, 1, 1) if sinks is not None else None,
        # Eager masks add the dtype's minimum; filling with it keeps fully masked rows uniform, like eager.
        fill=torch.finfo(work).min,
        cache=mask_cache,
    )
    if on_block is None and b_ > 1 and h * q_len * k_len <= _BATCHED_MAX:
        # Small problems in a batch: one batched computation in a scratch, then each example's cut copied
        # into its record (a per-example loop's Python overhead would cost more than these copies).
        return _attend_batched(query, key, value, spec, dests, scratch, rep, dropout, training, work)
    if (
        b_ == 1
        and on_block is None
        and spec.sink_col is None
        and not (training and dropout > 0)
        and (q_len <= _CAUSAL_BLOCK or not causal)
        and dests[0].direct(h, q_len, k_len, work)
    ):
        return _attend_one(query, key, value, spec, dests[0].probs, rep, work)
    return _attend_blocks(
        query, key, value, spec, dests, scratch, rep, work, causal, block_bytes, on_block, dropout, training
    )


def _attend_blocks(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor | None,
    spec: _Spec,
    dests: list[Dest],
    scratch: Scratch,
    rep: int,
    work: torch.dtype,
    causal: bool,
    block_bytes: int,
    on_block: Callable[[int, int, torch.Tensor, torch.Tensor | None], None] | None,
    dropout: float,
    training: bool,
) -> torch.Tensor | None:
    """The general path: per query block and example, scores in the record slice or a scratch block."""
    b_, h, q_len, d = query.shape
    h_kv, k_len = key.shape[1], key.shape[2]
    device = query.device
    qs = query.to(work)
    if rep > 1:
        qs = qs.contiguous()  # [H, Q, d] viewed as [H_kv, n_rep * Q, d]
    kf = key.to(work)
    out = None
    if value is not None:
        out = torch.empty(b_, q_len, h, value.shape[-1], dtype=value.dtype, device=device)
    direct = [on_block is None and dst.direct(h, q_len, k_len, work) for dst in dests]
    # Blocks bound the scratch (examples computed in their own record slice need none) and, for causal
    # modules, skip the keys after each block's last row.
    need_scratch = on_block is not None or not all(direct)
    per_row = (b_ if on_block is not None else 1) * h * k_len * torch.finfo(work).bits // 8
    bq = max(1, min(q_len, block_bytes // max(per_row, 1))) if need_scratch else q_len
    causal_rows = causal and q_len > 1 and (spec.future or (q_len == k_len and _mask_is_causal(spec)))
    if causal_rows and q_len > _CAUSAL_BLOCK:
        bq = min(bq, _CAUSAL_BLOCK)
    k_rep = v_rep = None  # repeated keys/values, only when a block is not one contiguous [H, Q] run (GQA)
    for i0 in range(0, q_len, bq):
        i1 = min(q_len, i0 + bq)
        n = i1 - i0
        kmax = min(k_len, i1) if causal_rows else k_len
        full = scratch.get((b_, h, n, k_len), device, work) if on_block is not None else None
        sinks_block = []
        for b in range(b_):
            dst = dests[b]
            # `rows` is where the block's probabilities end up ([H, n, K]), `s` where they are computed: the
            # rows themselves when they are one contiguous run (no copy), else a contiguous scratch block
            # (a softmax over a strided view runs at half speed), copied into the rows afterwards.
            if direct[b]:
                rows = dst.probs if n == q_len else dst.probs[:, i0:i1]  # the record's own storage
            elif full is not None:
                rows = full[b]
            else:
                rows = None
            if rows is not None and kmax == k_len and rows.is_contiguous():
                s = rows
            else:
                s = scratch.get((h, n, kmax), device, work, slot=1)
            if rep == 1:
                torch.bmm(qs[b, :, i0:i1], kf[b, :, :kmax].transpose(-1, -2), out=s)
            elif n == q_len and kmax == k_len and s.is_contiguous():
                torch.bmm(
                    qs[b].view(h_kv, rep * q_len, d), kf[b].transpose(-1, -2), out=s.view(h_kv, rep * q_len, k_len)
                )
            else:
                if k_rep is None:
                    k_rep = kf[:, :, None].expand(b_, h_kv, rep, k_len, d).reshape(b_, h, k_len, d).transpose(-1, -2)
                torch.bmm(qs[b, :, i0:i1], k_rep[b, :, :, :kmax], out=s)
            sink_mass = _scores_to_probs(s, spec, b, i0, i1, kmax, diagonal=causal_rows)
            if rows is not None and s is not rows:
                rows[:, :, :kmax].copy_(s)
                if kmax < k_len:
                    rows[:, :, kmax:].zero_()
            if out is not None:
                w = torch.nn.functional.dropout(s, p=dropout, training=True) if training and dropout > 0 else s
                if w.dtype != value.dtype:
                    w = w.to(value.dtype)
                if rep == 1:
                    o = torch.bmm(w, value[b, :, :kmax])
                elif n == q_len and kmax == k_len and w.is_contiguous():
                    o = torch.bmm(w.view(h_kv, rep * q_len, k_len), value[b]).view(h, q_len, -1)
                else:
                    if v_rep is None:
                        dv = value.shape[-1]
                        v_rep = value[:, :, None].expand(b_, h_kv, rep, k_len, dv).reshape(b_, h, k_len, dv)
                    o = torch.bmm(w, v_rep[b, :, :kmax])
                out[b, i0:i1].copy_(o.transpose(0, 1))
            if not direct[b] and dst.probs is not None:
                _deliver(dst, rows if rows is not None else s, sink_mass, i0, i1)
            elif direct[b] and dst.sink is not None and sink_mass is not None:
                dst.sink[:, i0:i1].copy_(sink_mass)
            if on_block is not None and sink_mass is not None:
                sinks_block.append(sink_mass.clone())
        if on_block is not None:
            on_block(i0, i1, full, torch.stack(sinks_block) if sinks_block else None)
    return out


def _inverted(original: torch.Tensor, mask: torch.Tensor, k_len: int, cache: dict | None) -> torch.Tensor:
    """``~mask``, once per mask tensor (every layer of a type shares it)."""
    key = ("inverted", id(original), k_len)
    hit = cache.get(key) if cache is not None else None
    if hit is not None and hit[0] is original:
        return hit[1]
    inverted = ~mask
    if cache is not None:
        cache[key] = (original, inverted)
    return inverted


def _future(q_len: int, k_len: int, device: torch.device, cache: dict | None) -> torch.Tensor:
    """Boolean ``[q_len, k_len]``: True where key j lies after query i (upper-left aligned, like sdpa)."""
    key = ("future", q_len, k_len, str(device))
    hit = cache.get(key) if cache is not None else None
    if hit is None:
        hit = torch.ones(q_len, k_len, dtype=torch.bool, device=device).triu_(1)
        if cache is not None:
            cache[key] = hit
    return hit


def _mask_is_causal(spec: _Spec) -> bool:
    """Whether the mask hides every key after its query (then skipping those keys changes nothing); cached."""
    mask = spec.mask
    if mask is None or mask.shape[-2] == 1:
        return False
    q_len, k_len = mask.shape[-2], mask.shape[-1]
    key = ("causal", id(mask), q_len, k_len)
    hit = spec.cache.get(key) if spec.cache is not None else None
    if hit is not None and hit[0] is mask:
        return hit[1]
    future = _future(q_len, k_len, mask.device, spec.cache)
    if spec.inverted is not None:
        ok = bool(spec.inverted[..., future].all())
    else:
        ok = bool((mask[..., future] <= torch.finfo(mask.dtype).min / 2).all())
    if spec.cache is not None:
        spec.cache[key] = (mask, ok)
    return ok


def _rows_of(t: torch.Tensor, b: int | None, i0: int, i1: int, kmax: int) -> torch.Tensor:
    """The part of a mask or bias ``[B|1, H|1, Q|1, K]`` that meets example ``b``'s rows ``i0..i1``, keys ``<kmax``."""
    if b is not None:
        t = t[b if t.shape[0] > 1 else 0]
    if t.shape[-2] != 1:
        t = t[..., i0:i1, :]
    return t[..., :kmax] if t.shape[-1] != 1 else t


def _scores_to_probs(
    s: torch.Tensor, spec: _Spec, b: int | None, i0: int, i1: int, kmax: int, diagonal: bool = False
) -> torch.Tensor | None:
    """Scale, cap, bias, mask and softmax the scores ``s`` ([H, n, kmax], or [B, H, n, kmax] when ``b`` is None)
    in place, as eager does; return the sink mass ([H, n] / [B, H, n]) when there are sinks."""
    if spec.scale != 1.0:
        s.mul_(spec.scale)
    if spec.softcap is not None:
        s.div_(spec.softcap).tanh_().mul_(spec.softcap)
    if spec.position_bias is not None:
        s.add_(_rows_of(spec.position_bias, b, i0, i1, kmax))
    if spec.inverted is not None:
        s.masked_fill_(_rows_of(spec.inverted, b, i0, i1, kmax), spec.fill)
    elif spec.mask is not None:
        s.add_(_rows_of(spec.mask, b, i0, i1, kmax))
    elif spec.future:
        if diagonal:  # a causal block sees every key before its first row: only its diagonal square is masked
            s[..., i0:kmax].masked_fill_(_future(i1 - i0, kmax - i0, s.device, spec.cache), spec.fill)
        elif (i1 - i0) * kmax <= _SMALL_FUTURE:
            s.masked_fill_(_future(i1, kmax, s.device, spec.cache)[i0:i1], spec.fill)
        else:  # long inputs: the block's rows only, never a [Q, K] boolean
            later = torch.arange(kmax, device=s.device)[None, :] > torch.arange(i0, i1, device=s.device)[:, None]
            s.masked_fill_(later, spec.fill)
    if spec.sink_col is None:
        torch.softmax(s, -1, out=s)
        return None
    # Learned sinks (gpt-oss): the sink logit takes part in the softmax; its share is returned apart and the
    # rows keep the model's exact weights (they sum to 1 - sink mass).
    m = torch.maximum(s.amax(-1, keepdim=True), spec.sink_col)
    s.sub_(m).exp_()
    e_sink = (spec.sink_col - m).exp_()
    denom = s.sum(-1, keepdim=True).add_(e_sink)
    s.div_(denom)
    return e_sink.div_(denom).squeeze(-1)


def _attend_one(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor | None,
    spec: _Spec,
    s: torch.Tensor,
    rep: int,
    work: torch.dtype,
) -> torch.Tensor | None:
    """One example, one block, straight into its record slice ``s`` [H, Q, K]: as few tensor ops as eager."""
    _, h, q_len, d = query.shape
    h_kv, k_len = key.shape[1], key.shape[2]
    q = query[0].to(work)
    if rep == 1:
        torch.bmm(q, key[0].to(work).transpose(-1, -2), out=s)
    else:
        torch.bmm(
            q.reshape(h_kv, rep * q_len, d), key[0].to(work).transpose(-1, -2), out=s.view(h_kv, rep * q_len, k_len)
        )
    _scores_to_probs(s, spec, 0, 0, q_len, k_len)
    if value is None:
        return None
    w = s if s.dtype == value.dtype else s.to(value.dtype)
    if rep == 1:
        o = torch.bmm(w, value[0])
    else:
        o = torch.bmm(w.view(h_kv, rep * q_len, k_len), value[0]).view(h, q_len, -1)
    return o.transpose(0, 1).unsqueeze(0).contiguous()


def _attend_batched(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor | None,
    spec: _Spec,
    dests: list[Dest],
    scratch: Scratch,
    rep: int,
    dropout: float,
    training: bool,
    work: torch.dtype,
) -> torch.Tensor | None:
    """A small batch computed at once in a scratch block, each example's part copied to its destination."""
    b_, h, q_len, d = query.shape
    h_kv, k_len = key.shape[1], key.shape[2]
    s = scratch.get((b_, h, q_len, k_len), query.device, work)
    qs = query.to(work).contiguous()
    torch.matmul(
        qs.view(b_, h_kv, rep * q_len, d), key.to(work).transpose(-1, -2), out=s.view(b_, h_kv, rep * q_len, k_len)
    )
    sink_mass = _scores_to_probs(s, spec, None, 0, q_len, k_len)
    out = None
    if value is not None:
        w = torch.nn.functional.dropout(s, p=dropout, training=True) if training and dropout > 0 else s
        if w.dtype != value.dtype:
            w = w.to(value.dtype)
        o = torch.matmul(w.view(b_, h_kv, rep * q_len, k_len), value).view(b_, h, q_len, -1)
        out = o.transpose(1, 2).contiguous()
    for b, dst in enumerate(dests):
        if dst.probs is not None:
            _deliver(dst, s[b], sink_mass[b] if sink_mass is not None else None, 0, q_len)
    return out


def _deliver(dst: Dest, s: torch.Tensor, sink_mass: torch.Tensor | None, i0: int, i1: int) -> None:
    """Copy a block [H, n, K] of one example into its destination: selected heads, real rows and columns."""
    r0, rn = dst.rows if dst.rows is not None else (0, dst.probs.shape[1])
    lo, hi = max(i0, r0), min(i1, r0 + rn)  # the block's rows that are real rows
    if lo >= hi:
        return
    blk = s[:, lo - i0 : hi - i0]
    c0, cn = dst.cols if dst.cols is not None else (0, dst.probs.shape[2])
    computed = max(0, min(cn, blk.shape[-1] - c0))  # a causal block stops at its last row's key
    target = dst.probs[:, lo - r0 : hi - r0]
    if computed < cn:
        target[:, :, computed:].zero_()
    blk = blk.narrow(-1, c0, computed)
    if dst.heads is not None:
        blk = blk.index_select(0, dst.heads)
    target[:, :, :computed].copy_(blk)
    if dst.sink is not None and sink_mass is not None:
        sm = sink_mass[:, lo - i0 : hi - i0]
        if dst.heads is not None:
            sm = sm.index_select(0, dst.heads)
        dst.sink[:, lo - r0 : hi - r0].copy_(sm)


class BufferPool:
    """Record storage reused once its records are gone (no page faults for a capture in a loop).

    A fresh 75 MB tensor costs ~50 ms of page faults on first touch here (allocations above glibc's
    32 MB mmap threshold are never recycled by malloc), about as much as the attention it holds. The pool
    keeps the storages it handed out; when every tensor on one has died (its use count is the pool's
    alone), a request of exactly the same size gets it back. Exact sizes only, so a record never holds
    more than its own weights. At most ``capacity`` bytes are kept; ``capacity=0`` disables the pool.
    """

    def __init__(self, capacity: int = 256 << 20) -> None:
        self.capacity = capacity
        self._free_check = getattr(torch._C, "_storage_Use_Count", None)
        self._storages: list[torch.UntypedStorage] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """An uninitialized tensor of ``shape``, on a storage of exactly its size that no live tensor uses."""
        n = 1
        for s in shape:
            n *= s
        nbytes = n * torch.empty((), dtype=dtype).element_size()
        device = torch.device(device)
        if self.capacity <= 0 or self._free_check is None or nbytes == 0 or device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        with self._lock:
            for i, st in enumerate(self._storages):
                if st.nbytes() == nbytes and self._free_check(st._cdata) == 1:
                    self._storages.append(self._storages.pop(i))  # most recently used last
                    return torch.empty(0, dtype=dtype).set_(st, 0, shape)
            t = torch.empty(shape, dtype=dtype, device=device)
            # Make room by dropping free storages, oldest first; storages still in use are the records' own
            # memory and stay. If there is no room, the new storage is simply not pooled.
            total = sum(st.nbytes() for st in self._storages)
            i = 0
            while total + nbytes > self.capacity and i < len(self._storages):
                st = self._storages[i]
                if self._free_check(st._cdata) == 1:
                    total -= st.nbytes()
                    del self._storages[i]
                else:
                    i += 1
            if total + nbytes <= self.capacity:
                self._storages.append(t.untyped_storage())
            return t

    def clear(self) -> None:
        """Forget every pooled storage."""
        with self._lock:
            self._storages.clear()


POOL = BufferPool()
