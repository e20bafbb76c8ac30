"""Alignment benchmark: does cross-attention of a trained translator point at the source word it translates?

A synthetic language pair: every source word has one dictionary translation (a fixed permutation within
its word class), and an adjective before a noun is swapped after it in the target (local reordering,
as from English to French), so the gold word alignment is known exactly. A tiny BART is trained on the
CPU with a fixed seed; then each target word is aligned to the source word its cross-attention row
weighs most, and the alignment error rate (AER, Och & Ney 2003; here every gold link is "sure", so
AER = 1 − 2|A∩G| / (|A| + |G|)) is reported per layer (heads averaged), per head, and for every
registered method defined on cross-attention, next to a diagonal and a random baseline.

Run: ``attn-plugins bench align --json`` or ``python -m attn_plugins.bench.align``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import bootstrap

from ..errors import AttnPluginsError, InputError
from ..zoo import tiny_tokenizer, tiny_vocab
from .command import bench_parser
from .threads import torch_threads

ADJECTIVES = ("big", "small", "new", "old", "long", "short", "good", "bad")
NOUNS = ("cat", "dog", "bird", "tree", "car", "house", "city", "man", "woman", "book", "road", "food")
FUNCTION = ("the", "a", "and", "with", "in", "on", "of", "to", "from", "by")
CLASSES = (ADJECTIVES, NOUNS, FUNCTION)


@dataclass
class Pair:
    """A source sentence, its translation, and the gold links (source word, target word)."""

    source: list[str]
    target: list[str]
    gold: set[tuple[int, int]]


@dataclass
class Config:
    """Sizes of the data, the model and the training run."""

    n_train: int = 2000
    n_eval: int = 100
    # About 1000 small steps: at 2e-3 or in fewer steps the tiny translator stayed near 20 % accuracy.
    epochs: int = 8
    batch_size: int = 16
    lr: float = 1e-3
    phrases: tuple[int, int] = (2, 4)
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    n_resamples: int = 1000

    @classmethod
    def quick(cls) -> Config:
        """A few-second run for tests."""
        return cls(n_train=256, n_eval=4, epochs=1, phrases=(1, 3), n_resamples=100)


# ---------------------------------------------------------------------------- data
def dictionary(seed: int) -> dict[str, str]:
    """Source word to target word: a random derangement within each word class (no word maps to itself)."""
    rng = random.Random(seed)
    out: dict[str, str] = {}
    for words in CLASSES:
        perm = list(words)
        while any(a == b for a, b in zip(words, perm)):
            rng.shuffle(perm)
        out.update(zip(words, perm))
    return out


def translate(source: list[str], lexicon: dict[str, str]) -> Pair:
    """Word-by-word translation with adjective-noun swaps, and the gold alignment it implies."""
    order = list(range(len(source)))
    i = 0
    while i < len(source) - 1:
        if source[i] in ADJECTIVES and source[i + 1] in NOUNS:
            order[i], order[i + 1] = order[i + 1], order[i]
            i += 2
        else:
            i += 1
    target = [lexicon[source[j]] for j in order]
    return Pair(source, target, {(j, t) for t, j in enumerate(order)})


def make_pairs(n: int, rng: random.Random, lexicon: dict[str, str], phrases: tuple[int, int]) -> list[Pair]:
    """``n`` sentences of phrases ``[det] [adj] noun`` joined by function words, with translations."""
    out = []
    for _ in range(n):
        words: list[str] = []
        for p in range(rng.randint(*phrases)):
            if p:
                words.append(rng.choice(("and", "with", "in", "on", "of", "to", "from", "by")))
            if rng.random() < 0.6:
                words.append(rng.choice(("the", "a")))
            if rng.random() < 0.6:
                words.append(rng.choice(ADJECTIVES))
            words.append(rng.choice(NOUNS))
        out.append(translate(words, lexicon))
    return out


# ---------------------------------------------------------------------------- model
def build_model(config: Config, tokenizer: Any, seed: int) -> torch.nn.Module:
    """A tiny random-init BART over the tiny seq2seq vocabulary."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    cfg = BartConfig(
        vocab_size=len(tiny_vocab("seq2seq")),
        d_model=config.d_model,
        encoder_layers=config.layers,
        decoder_layers=config.layers,
        encoder_attention_heads=config.heads,
        decoder_attention_heads=config.heads,
        encoder_ffn_dim=config.d_model * 2,
        decoder_ffn_dim=config.d_model * 2,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
        forced_eos_token_id=None,
    )
    return BartForConditionalGeneration(cfg)


def train(model: torch.nn.Module, tokenizer: Any, data: list[Pair], config: Config, seed: int) -> float:
    """Teacher-forced training with AdamW; returns the seconds spent."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    src = tokenizer([" ".join(p.source) for p in data], padding=True, return_tensors="pt")
    tgt = tokenizer(text_target=[" ".join(p.target) for p in data], padding=True, return_tensors="pt")
    labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)  # no loss on padding
    model.train()
    start = time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), config.batch_size):
            idx = order[i : i + config.batch_size]
            out = model(input_ids=src["input_ids"][idx], attention_mask=src["attention_mask"][idx], labels=labels[idx])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    model.eval()
    return time.perf_counter() - start


def token_accuracy(model: torch.nn.Module, tokenizer: Any, data: list[Pair]) -> float:
    """Teacher-forced accuracy of the next target word, over the evaluation pairs."""
    src = tokenizer([" ".join(p.source) for p in data], padding=True, return_tensors="pt")
    tgt = tokenizer(text_target=[" ".join(p.target) for p in data], padding=True, return_tensors="pt")
    labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
    with torch.no_grad():
        logits = model(**src, labels=labels).logits
    keep = labels != -100
    return float((logits.argmax(-1)[keep] == labels[keep]).float().mean())


# ---------------------------------------------------------------------------- AER
def links_from_scores(scores: np.ndarray) -> set[tuple[int, int]]:
    """Hard alignment from a [target words, source words] score matrix: each target word to its argmax."""
    if scores.ndim != 2 or scores.size == 0:
        raise InputError(f"alignment scores must be a non-empty [target, source] matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise InputError("alignment scores contain NaN or infinite values")
    return {(int(s), t) for t, s in enumerate(scores.argmax(axis=1))}


def aer(predicted: set[tuple[int, int]], gold: set[tuple[int, int]], possible: set | None = None) -> float:
    """Alignment error rate: 1 − (|A∩S| + |A∩P|) / (|A| + |S|), with P ⊇ S (P = S when not given)."""
    if not gold:
        raise InputError("the gold alignment is empty")
    if not predicted:
        raise InputError("the predicted alignment is empty")
    possible = gold | (possible or set())
    return 1.0 - (len(predicted & gold) + len(predicted & possible)) / (len(predicted) + len(gold))


class Counts:
    """Per-sentence link counts of one aligner, for a corpus AER and its bootstrap interval."""

    def __init__(self) -> None:
        self.hits: list[int] = []
        self.predicted: list[int] = []
        self.gold: list[int] = []

    def add(self, predicted: set[tuple[int, int]], gold: set[tuple[int, int]]) -> None:
        """Add one sentence (sure-only gold, so |A∩S| = |A∩P|)."""
        self.hits.append(len(predicted & gold))
        self.predicted.append(len(predicted))
        self.gold.append(len(gold))

    def value(self) -> float:
        """Corpus AER: counts summed over sentences before the ratio, as in Och & Ney."""
        return 1.0 - 2 * sum(self.hits) / (sum(self.predicted) + sum(self.gold))

    def summary(self, seed: int, n_resamples: int) -> dict[str, Any]:
        """Corpus AER with a bootstrap 95 % interval over sentences (scipy, paired resampling)."""
        h, a, g = (np.asarray(x, dtype=float) for x in (self.hits, self.predicted, self.gold))
        value = self.value()
        if len(h) < 2:
            low = high = value
        else:

            def stat(h_: np.ndarray, a_: np.ndarray, g_: np.ndarray, axis: int = -1) -> np.ndarray:
                return 1.0 - 2 * h_.sum(axis) / (a_.sum(axis) + g_.sum(axis))

            ci = bootstrap(
                (h, a, g),
                stat,
                paired=True,
                vectorized=True,
                confidence_level=0.95,
                n_resamples=n_resamples,
                method="percentile",
                rng=np.random.default_rng(seed),
            ).confidence_interval
            low, high = float(ci.low), float(ci.high)
        return {"aer": round(value, 4), "ci95": [round(low, 4), round(high, 4)], "sentences": len(h)}


# ---------------------------------------------------------------------------- aligners
def word_rows(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Decoder query rows that predict each target word, and the encoder key columns of the source words.

    Decoder inputs are ``[start, t_1 … t_m, </s>]``: row j is where target word j is predicted. Source
    keys are ``[s_1 … s_n, </s>]``: column i is source word i (the final ``</s>`` is left out).
    """
    return np.arange(len(pair.target)), np.arange(len(pair.source))


def method_aligner(name: str, model: Any, tokenizer: Any) -> Callable[[Pair, Any], np.ndarray]:
    """[target words, source words] scores of a registered method on cross attention.

    Methods that need gradients explain each target word's row for that word's own log-probability,
    as Chefer et al. 2021 do, with all words of a sentence in one batched capture.
    """
    import attn_plugins as ap

    from ..methods import get_method

    method = get_method(name)
    requires = set(getattr(method, "requires", ()))
    if "cross" not in getattr(method, "kinds", ("cross",)):
        raise InputError(f"method {name!r} is not defined on cross attention")
    opts = {"value_norms": True} if "value_norms" in requires else {}
    if "values" in requires:
        opts["values"] = True

    def align(pair: Pair, record: Any) -> np.ndarray:
        rows, cols = word_rows(pair)
        src, tgt = " ".join(pair.source), " ".join(pair.target)
        if "gradients" not in requires:
            rec = record if not opts else ap.capture(model, tokenizer, src, target=tgt, **opts)
            # One int position per call: the minimal method contract, which third-party methods honor too.
            m = np.stack([np.asarray(ap.attribute(rec, name, position=int(j), kind="cross")) for j in rows])
            return m[:, cols]
        # One batch holding the pair once per target word: copy j's gradient target is word j's
        # log-probability, so a single forward and backward pass explains every row for its own output.
        gold = torch.tensor(tokenizer(text_target=tgt)["input_ids"])[rows]
        index = torch.as_tensor(rows)

        def target_fn(output: Any) -> torch.Tensor:
            logp = torch.log_softmax(output.logits[index, index], -1)
            return logp.gather(-1, gold[:, None]).sum()

        m = len(rows)
        records = ap.capture(
            model, tokenizer, [src] * m, target=[tgt] * m, gradients=True, gradient_target=target_fn, **opts
        )
        out = [
            np.asarray(ap.attribute(rec, name, position=int(j), kind="cross"))[cols] for j, rec in zip(rows, records)
        ]
        return np.stack(out)

    return align


def run(quick: bool = False, seed: int = 0, threads: int = 1) -> dict[str, Any]:
    """Train the synthetic translator; AER per layer, per head, per method and for two baselines."""
    with torch_threads(threads):
        return _run(quick, seed)


def _run(quick: bool, seed: int) -> dict[str, Any]:
    """The benchmark itself, run inside :func:`run`'s thread setting."""
    import attn_plugins as ap

    from ..plugins import get_registry

    config = Config.quick() if quick else Config()
    t0 = time.perf_counter()
    rng = random.Random(seed)
    tokenizer = tiny_tokenizer("seq2seq")
    lexicon = dictionary(seed)
    train_data = make_pairs(config.n_train, rng, lexicon, config.phrases)
    eval_data = make_pairs(config.n_eval, rng, lexicon, config.phrases)
    model = build_model(config, tokenizer, seed)
    train_seconds = train(model, tokenizer, train_data, config, seed)
    accuracy = token_accuracy(model, tokenizer, eval_data)

    n_layers, n_heads = config.layers, config.heads
    layer_counts = [Counts() for _ in range(n_layers)]
    head_counts = [[Counts() for _ in range(n_heads)] for _ in range(n_layers)]
    baselines = {"diagonal": Counts(), "random": Counts()}
    brng = np.random.default_rng(seed + 1)

    aligners: dict[str, Callable[[Pair, Any], np.ndarray]] = {}
    errors: dict[str, str] = {}
    for name in get_registry().names("method"):
        try:
            aligners[name] = method_aligner(name, model, tokenizer)
        except AttnPluginsError as exc:
            errors[name] = str(exc)
    method_counts = {name: Counts() for name in aligners}
    method_seconds: dict[str, list[float]] = {name: [] for name in aligners}

    for pair in eval_data:
        record = ap.capture(model, tokenizer, " ".join(pair.source), target=" ".join(pair.target))
        if len(record.tokens) != len(pair.source) + 1 or len(record.target_tokens) != len(pair.target) + 2:
            raise AttnPluginsError(f"a word split into pieces in {pair.source} / {pair.target}")
        rows, cols = word_rows(pair)
        cross = record.attentions["cross"].numpy()[:, :, rows][:, :, :, cols]  # [L, H, m, n]
        for li in range(n_layers):
            layer_counts[li].add(links_from_scores(cross[li].mean(0)), pair.gold)
            for hi in range(n_heads):
                head_counts[li][hi].add(links_from_scores(cross[li, hi]), pair.gold)
        m, n = len(rows), len(cols)
        # Diagonal: target word j to the source word at the same relative position.
        diag = {(min(n - 1, round(j * n / m)), j) for j in range(m)}
        baselines["diagonal"].add(diag, pair.gold)
        baselines["random"].add({(int(brng.integers(n)), j) for j in range(m)}, pair.gold)
        for name, align in list(aligners.items()):
            try:
                start = time.perf_counter()
                scores = align(pair, record)
                method_seconds[name].append(time.perf_counter() - start)
                method_counts[name].add(links_from_scores(scores), pair.gold)
            except Exception as exc:  # one broken method is reported, the others still run
                errors[name] = f"{type(exc).__name__}: {exc}"
                del aligners[name], method_counts[name], method_seconds[name]

    def summ(c: Counts) -> dict[str, Any]:
        return c.summary(seed, config.n_resamples)

    heads = {f"{li}.{hi}": round(head_counts[li][hi].value(), 4) for li in range(n_layers) for hi in range(n_heads)}
    best = min(heads, key=heads.get)
    return {
        "benchmark": "align",
        "seed": seed,
        "quick": quick,
        "config": {**config.__dict__, "phrases": list(config.phrases)},
        "model": {
            "type": "bart",
            "teacher_forced_accuracy": round(accuracy, 4),
            "train_seconds": round(train_seconds, 2),
            "torch_threads": torch.get_num_threads(),
        },
        "aer": {
            "layers": {str(li): summ(c) for li, c in enumerate(layer_counts)},
            "heads": heads,
            "best_head": {"head": best, "aer": heads[best]},
            "methods": {
                name: {**summ(c), "seconds_per_example": round(float(np.mean(method_seconds[name])), 5)}
                for name, c in method_counts.items()
            },
            "baselines": {name: summ(c) for name, c in baselines.items()},
        },
        "errors": errors,
        "elapsed_seconds": round(time.perf_counter() - t0, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the benchmark's JSON."""
    parser = bench_parser("attn-plugins bench align", __doc__.splitlines()[0], "a few-second run (tests, smoke checks)")
    args = parser.parse_args(argv)
    print(json.dumps(run(quick=args.quick, seed=args.seed, threads=args.threads), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
