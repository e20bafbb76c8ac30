"""Planted-rationale benchmark: a classifier whose label is decided by known trigger tokens.

Sentences are neutral distractor words with one or two trigger words planted at random places; the
triggers all belong to one class (``good``, ``great``, ... for class 1; ``bad``, ``terrible``, ... for
class 0) and decide the label. Training also holds sentences without any trigger, of a third, neutral
class 2: without it the model could call everything without a positive word negative and ignore the
negative triggers, which would then not be a rationale at all. A tiny BERT classifier is trained on the CPU with a fixed seed; then every
registered attention method, shap's Partition explainer and a random baseline are scored on held-out
triggered sentences for plausibility (token F1, IOU-F1, AUPRC against the planted triggers) and faithfulness
(ERASER AOPC comprehensiveness/sufficiency, deletion and insertion areas), each as a mean with a
bootstrap 95 % interval, plus the time per example (capture + attribution; SHAP's own forward passes).

Run: ``attn-plugins bench planted --json`` or ``python -m attn_plugins.bench.planted``.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import AttnPluginsError
from ..metrics import agreement, faithfulness, plausibility
from ..zoo import tiny_tokenizer, tiny_vocab
from .command import bench_parser
from .stats import mean_ci
from .threads import torch_threads

TRIGGERS = {
    1: ("good", "great", "love", "fun", "happy"),
    0: ("bad", "terrible", "hate", "boring", "sad"),
}
DISTRACTORS = tuple(
    (
        "the a an and or it this that movie film book story plot actor music time day night man woman people "
        "world life work place house home city country water food cat dog bird tree car road one two three "
        "first last new old big small long short of in on at to from with by for about over under"
    ).split()
)
METRICS = ("token_f1", "iou_f1", "auprc", "aopc_comprehensiveness", "aopc_sufficiency", "deletion", "insertion")
# Which direction is better, for readers of the JSON.
HIGHER_IS_BETTER = {
    "token_f1": True,
    "iou_f1": True,
    "auprc": True,
    "aopc_comprehensiveness": True,
    "aopc_sufficiency": False,
    "deletion": False,
    "insertion": True,
    "spearman_vs_shap": True,
}


@dataclass
class Example:
    """One sentence, its label, and which words are planted triggers."""

    words: list[str]
    label: int
    planted: list[bool]

    @property
    def text(self) -> str:
        """The sentence as a string."""
        return " ".join(self.words)


@dataclass
class Config:
    """Sizes of the data, the model and the training run."""

    n_train: int = 3000
    n_eval: int = 100
    epochs: int = 3
    batch_size: int = 32
    lr: float = 2e-3
    min_len: int = 6
    max_len: int = 14
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    mask_prob: float = 0.15
    label_smoothing: float = 0.1
    shap_max_evals: int = 300
    n_resamples: int = 1000

    @classmethod
    def quick(cls) -> Config:
        """A few-second run for tests: little data, one epoch, few SHAP evaluations."""
        return cls(n_train=320, n_eval=6, epochs=1, shap_max_evals=60, n_resamples=100)


# ---------------------------------------------------------------------------- data
def make_examples(
    n: int, rng: random.Random, min_len: int = 6, max_len: int = 14, neutral: bool = True
) -> list[Example]:
    """``n`` sentences of distractors with one or two same-class triggers planted at random positions.

    With ``neutral``, a third of them carry no trigger and the label 2.
    """
    vocab = set(tiny_vocab("bert"))
    missing = [w for ws in (*TRIGGERS.values(), DISTRACTORS) for w in ws if w not in vocab]
    if missing:  # every word must be a single token, so word-level truth is token-level truth
        raise AttnPluginsError(f"planted benchmark words missing from the tiny vocabulary: {missing}")
    out = []
    for _ in range(n):
        label = rng.randrange(3 if neutral else 2)
        words = [rng.choice(DISTRACTORS) for _ in range(rng.randint(min_len, max_len))]
        planted = [False] * len(words)
        for _ in range(rng.randint(1, 2) if label in TRIGGERS else 0):
            pos = rng.randint(0, len(words))
            words.insert(pos, rng.choice(TRIGGERS[label]))
            planted.insert(pos, True)
        out.append(Example(words, label, planted))
    return out


# ---------------------------------------------------------------------------- model
def build_model(config: Config, seed: int) -> torch.nn.Module:
    """A tiny random-init BERT sequence classifier over the tiny vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(tiny_vocab("bert")),
        hidden_size=config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        intermediate_size=config.hidden * 2,
        max_position_embeddings=64,
        num_labels=3,
        pad_token_id=1,
    )
    return BertForSequenceClassification(cfg)


def train(model: torch.nn.Module, tokenizer: Any, data: list[Example], config: Config, seed: int) -> float:
    """Train with AdamW and label smoothing; distractors are randomly replaced by [MASK] so erased inputs stay in distribution."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    enc = tokenizer([e.text for e in data], padding=True, return_tensors="pt")
    labels = torch.tensor([e.label for e in data])
    trigger_ids = torch.tensor(tokenizer.convert_tokens_to_ids([w for ws in TRIGGERS.values() for w in ws]))
    special = torch.tensor(tokenizer.all_special_ids)
    model.train()
    start = time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), config.batch_size):
            idx = order[i : i + config.batch_size]
            ids = enc["input_ids"][idx].clone()
            # Masking only distractors teaches the model that [MASK] carries no class evidence.
            maskable = ~torch.isin(ids, trigger_ids) & ~torch.isin(ids, special)
            drop = (torch.rand(ids.shape, generator=gen) < config.mask_prob) & maskable
            ids[drop] = tokenizer.mask_token_id
            logits = model(input_ids=ids, attention_mask=enc["attention_mask"][idx]).logits
            # Label smoothing keeps the logits finite: a saturated classifier (tanh pooler, p = 1.000) has
            # vanishing gradients, which would make gradient-based methods look broken for the wrong reason.
            loss = torch.nn.functional.cross_entropy(logits, labels[idx], label_smoothing=config.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return time.perf_counter() - start


def predictor(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """Batched class probabilities over token-id arrays (no padding: every row has the same length)."""

    def predict(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = model(input_ids=torch.as_tensor(ids, dtype=torch.long)).logits
        return torch.softmax(logits, -1).numpy()

    return predict


def text_predictor(model: torch.nn.Module, tokenizer: Any) -> Callable[[Sequence[str]], np.ndarray]:
    """Batched class probabilities over strings, for shap's Text masker."""

    def predict(texts: Sequence[str]) -> np.ndarray:
        enc = tokenizer(list(texts), padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits
        return torch.softmax(logits, -1).numpy()

    return predict


# ---------------------------------------------------------------------------- scorers
Scorer = Callable[[Example, int], np.ndarray]


def capture_for(method: Any, model: Any, tokenizer: Any, text: str, target: int) -> Any:
    """A record holding what ``method`` reads for the ``target`` class: the method's own capture (see Method.capture)."""
    from ..methods.base import Method

    if not isinstance(method, Method):  # a plain callable plugin: the base capture of what it requires
        base = Method()
        base.requires = tuple(getattr(method, "requires", ()))
        method = base
    return method.capture(model, tokenizer, text, gradient_target=target)


def method_scorer(name: str, model: Any, tokenizer: Any) -> Scorer:
    """Scores from a registered attention method, for the [CLS] query that the classifier reads."""
    import attn_plugins as ap

    from ..methods import get_method

    method = get_method(name)

    def score(example: Example, target: int) -> np.ndarray:
        record = capture_for(method, model, tokenizer, example.text, target)
        return np.asarray(ap.attribute(record, name, position="first"), dtype=float)

    return score


def shap_scorer(model: Any, tokenizer: Any, max_evals: int) -> Scorer:
    """shap's Partition explainer with a Text masker that masks with [MASK], as the erasure metrics do."""
    import shap

    masker = shap.maskers.Text(tokenizer, mask_token=tokenizer.mask_token, collapse_mask_token=False)
    explainer = shap.explainers.Partition(text_predictor(model, tokenizer), masker)

    def score(example: Example, target: int) -> np.ndarray:
        expl = explainer([example.text], max_evals=max_evals, batch_size=64, silent=True)
        return np.asarray(expl.values[0][:, target], dtype=float)

    return score


def random_scorer(seed: int) -> Scorer:
    """Uniform random scores: the floor every method must beat."""
    rng = np.random.default_rng(seed)

    def score(example: Example, target: int) -> np.ndarray:
        return rng.random(len(example.words) + 2)  # + [CLS] and [SEP]

    return score


# ---------------------------------------------------------------------------- evaluation
def plausibility_scores(scores: np.ndarray, rationale: np.ndarray, protected: np.ndarray) -> dict[str, float]:
    """Token F1, IOU-F1 and AUPRC of one example's scores against its planted words (no model calls)."""
    return {
        "token_f1": plausibility.token_f1(scores, rationale, protected=protected),
        "iou_f1": plausibility.iou_f1(scores, rationale, protected=protected),
        "auprc": plausibility.auprc(scores, rationale, protected=protected),
    }


def score_example(
    scores: np.ndarray,
    ids: np.ndarray,
    rationale: np.ndarray,
    protected: np.ndarray,
    target: int,
    predict: Any,
    mask_id: int,
) -> dict[str, float]:
    """Every plausibility and faithfulness metric of one example's scores."""
    kw = {"baseline_id": mask_id, "protected": protected}
    erased = faithfulness.aopc(predict, ids, scores, target, **kw)
    return {
        **plausibility_scores(scores, rationale, protected),
        "aopc_comprehensiveness": erased["comprehensiveness"].value,
        "aopc_sufficiency": erased["sufficiency"].value,
        "deletion": faithfulness.deletion_curve(predict, ids, scores, target, **kw).area,
        "insertion": faithfulness.insertion_curve(predict, ids, scores, target, **kw).area,
    }


@dataclass
class Prepared:
    """One held-out sentence ready to score: its token ids, planted and protected tokens, the model's class."""

    example: Example
    ids: np.ndarray
    rationale: np.ndarray
    protected: np.ndarray
    predicted: int


@dataclass
class Setup:
    """The trained classifier and the held-out data every scorer is evaluated on."""

    config: Config
    tokenizer: Any
    model: torch.nn.Module
    predict: Callable[[np.ndarray], np.ndarray]
    train_data: list[Example]
    eval_data: list[Prepared]
    train_seconds: float

    @property
    def accuracy(self) -> float:
        """Share of held-out sentences whose predicted class is their label."""
        return float(np.mean([p.predicted == p.example.label for p in self.eval_data]))


def prepare(config: Config, seed: int) -> Setup:
    """Make the data, train the classifier (fixed seed) and prepare the held-out sentences."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer("bert")
    train_data = make_examples(config.n_train, rng, config.min_len, config.max_len)
    # Held-out sentences all carry triggers: plausibility needs a non-empty rationale.
    eval_data = make_examples(config.n_eval, rng, config.min_len, config.max_len, neutral=False)
    model = build_model(config, seed)
    train_seconds = train(model, tokenizer, train_data, config, seed)
    predict = predictor(model)
    prepared = []
    for ex in eval_data:
        enc = tokenizer(ex.text, return_special_tokens_mask=True)
        ids = np.asarray(enc["input_ids"])
        protected = np.asarray(enc["special_tokens_mask"], dtype=bool)
        if len(ids) != len(ex.words) + 2:
            raise AttnPluginsError(f"a planted word split into pieces in {ex.text!r}")
        rationale = np.concatenate([[False], ex.planted, [False]])
        pred = int(predict(ids[None]).argmax(-1)[0])
        prepared.append(Prepared(ex, ids, rationale, protected, pred))
    return Setup(config, tokenizer, model, predict, train_data, prepared, train_seconds)


def evaluate(
    name: str, scorer: Scorer, setup: Setup, faithful: bool = True
) -> tuple[dict[str, list[float]], list[np.ndarray]]:
    """Per-example metrics of one scorer over the held-out sentences, and its scores.

    ``faithful=False`` computes the plausibility metrics only (no erasure curves, no model calls besides
    the scorer's own).
    """
    values: dict[str, list[float]] = {m: [] for m in (*METRICS, "seconds_per_example")} if faithful else {}
    kept: list[np.ndarray] = []
    # One untimed call first: one-off costs (shap's numba compilation, lazy imports) are not per example.
    first = setup.train_data[0]
    scorer(first, first.label)
    for p in setup.eval_data:
        start = time.perf_counter()
        scores = scorer(p.example, p.predicted)
        seconds = time.perf_counter() - start
        if scores.shape != p.ids.shape:
            raise AttnPluginsError(f"{name} returned {scores.shape[0]} scores for {len(p.ids)} tokens")
        if faithful:
            found = score_example(
                scores, p.ids, p.rationale, p.protected, p.predicted, setup.predict, setup.tokenizer.mask_token_id
            )
            values["seconds_per_example"].append(seconds)
        else:
            found = plausibility_scores(scores, p.rationale, p.protected)
        for metric, v in found.items():
            values.setdefault(metric, []).append(v)
        kept.append(scores)
    return values, kept


def scorers(setup: Setup, seed: int) -> dict[str, Scorer]:
    """Every registered method, shap's Partition explainer and the random baseline, by name."""
    from ..plugins import get_registry

    out: dict[str, Scorer] = {}
    for name in get_registry().names("method"):
        out[name] = method_scorer(name, setup.model, setup.tokenizer)
    out["shap_partition"] = shap_scorer(setup.model, setup.tokenizer, setup.config.shap_max_evals)
    out["random"] = random_scorer(seed + 1)
    return out


def run(quick: bool = False, seed: int = 0, threads: int = 1) -> dict[str, Any]:
    """Train the planted classifier, score every method, SHAP and random; return the JSON-ready result."""
    with torch_threads(threads):
        return _run(quick, seed)


def _run(quick: bool, seed: int) -> dict[str, Any]:
    """The benchmark itself, run inside :func:`run`'s thread setting."""
    from ..plugins import get_registry

    config = Config.quick() if quick else Config()
    t0 = time.perf_counter()
    setup = prepare(config, seed)
    registry = get_registry()

    errors: dict[str, str] = {}
    per_method: dict[str, dict[str, list[float]]] = {}
    all_scores: dict[str, list[np.ndarray]] = {}
    for name, scorer in scorers(setup, seed).items():
        try:
            per_method[name], all_scores[name] = evaluate(name, scorer, setup)
        except Exception as exc:  # one broken method is reported, the others still run
            errors[name] = f"{type(exc).__name__}: {exc}"

    # Agreement with SHAP, the attribution reference, for every other scorer.
    shap_scores = all_scores.get("shap_partition", [])
    for name, kept in all_scores.items():
        if name == "shap_partition" or not shap_scores:
            continue
        rhos = []
        for s, ref, p in zip(kept, shap_scores, setup.eval_data):
            try:
                rhos.append(agreement.spearman(s, ref, protected=p.protected))
            except AttnPluginsError:
                continue  # a constant score vector has no rank: left out rather than counted as zero
        if rhos:
            per_method[name]["spearman_vs_shap"] = rhos

    methods = {
        name: {metric: mean_ci(v, seed, config.n_resamples) for metric, v in values.items()}
        for name, values in per_method.items()
    }
    registered = set(registry.names("method"))
    return {
        "benchmark": "planted",
        "seed": seed,
        "quick": quick,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "config": config.__dict__,
        "model": {
            "type": "bert",
            "test_accuracy": round(setup.accuracy, 4),
            "train_seconds": round(setup.train_seconds, 2),
            "torch_threads": torch.get_num_threads(),
        },
        "higher_is_better": HIGHER_IS_BETTER,
        # Which distribution provides each method (a plugin's methods are scored like the built-ins).
        "sources": {name: registry.source("method", name).distribution for name in methods if name in registered},
        "methods": methods,
        "errors": errors,
        "elapsed_seconds": round(time.perf_counter() - t0, 2),
    }


# Columns of the README table: (metric, header), the arrow saying which direction is better.
TABLE_COLUMNS = (
    ("token_f1", "token F1 ↑"),
    ("auprc", "AUPRC ↑"),
    ("aopc_comprehensiveness", "AOPC compr. ↑"),
    ("aopc_sufficiency", "AOPC suff. ↓"),
    ("spearman_vs_shap", "Spearman vs shap"),
)


def table(result: dict[str, Any]) -> str:
    """The Markdown table of README.md: mean [95 % interval] per metric, methods by token F1, then shap and random.

    ``scripts/write_planted_table.py`` writes it into README.md from ``benchmarks/results/planted.json``;
    a method from another distribution than attn-plugins (a plugin) is named with it.
    """
    methods = result["methods"]
    sources = result.get("sources", {})
    baselines = [n for n in ("shap_partition", "random") if n in methods]
    ranked = sorted((n for n in methods if n not in baselines), key=lambda n: (-methods[n]["token_f1"]["mean"], n))
    lines = [
        "| method | " + " | ".join(h for _, h in TABLE_COLUMNS) + " | ms/example |",
        "|" + "---|" * (len(TABLE_COLUMNS) + 2),
    ]
    for name in [*ranked, *baselines]:
        metrics = methods[name]
        cells = []
        for metric, _ in TABLE_COLUMNS:
            m = metrics.get(metric)
            cells.append("" if m is None else f"{m['mean']:.2f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]")
        label = name
        if name == "shap_partition":
            label = f"shap Partition ({result['config']['shap_max_evals']} evals)"
        elif sources.get(name, "attn-plugins") != "attn-plugins":
            label = f"{name} (plugin {sources[name]})"
        ms = metrics["seconds_per_example"]["mean"] * 1000
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ms:.1f} |")
    return "\n".join(lines)


# README.md holds the generated section between these markers (scripts/write_planted_table.py writes it).
README_BLOCK = re.compile(r"(<!-- planted: [^\n]*-->\n)(.*?)(<!-- /planted -->)", flags=re.S)


def readme_section(result: dict[str, Any]) -> str:
    """The generated part of README.md's planted section: where the figures come from, and :func:`table`."""
    n = result["config"]["n_eval"]
    when = f" on {result['date']}" if result.get("date") else ""
    return (
        f"Mean and bootstrap 95 % interval over {n} held-out sentences (the trained classifier's test accuracy: "
        f"{result['model']['test_accuracy']:.2f}); produced by `attn-plugins bench planted --json`{when} "
        f"(full JSON in `benchmarks/results/planted.json`).\n\n{table(result)}\n\n"
    )


def with_readme_section(readme: str, result: dict[str, Any]) -> str:
    """``readme`` with the block between its planted markers replaced by :func:`readme_section`."""
    if not README_BLOCK.search(readme):
        raise AttnPluginsError("README.md has no <!-- planted: ... --> ... <!-- /planted --> block")
    return README_BLOCK.sub(lambda m: m.group(1) + readme_section(result) + m.group(3), readme, count=1)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the benchmark's JSON (or ``--table``: a Markdown table)."""
    parser = bench_parser(
        "attn-plugins bench planted", __doc__.splitlines()[0], "a few-second run (tests, smoke checks)"
    )
    parser.add_argument("--table", action="store_true", help="print a Markdown table instead of JSON")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, seed=args.seed, threads=args.threads)
    print(table(result) if args.table else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
