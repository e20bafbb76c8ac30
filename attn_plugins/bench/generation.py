"""Known truth beyond BERT: a decoder classifier, a translation and a lookup, trained on the CPU, every method scored.

Three tiny models, each trained with a fixed seed in seconds on one thread, on a task whose deciding
input tokens are known by construction:

* ``decoder_planted``: a 2-layer Llama (``LlamaForCausalLM``) reads the planted-rationale sentences of
  :mod:`attn_plugins.bench.planted` as ``[CLS] words [SEP]`` and predicts a class word (``no``, ``yes``,
  ``so`` for classes 0, 1, 2) as the next token at ``[SEP]``; the explained value is the log-probability of
  the predicted class word (``ap.explain``'s ``next_token`` target, :class:`~attn_plugins.explain.targets.TokenLogProb`);
  the truth is the planted trigger words;
* ``translation``: a 2+2-layer Marian encoder-decoder translates a word-by-word substitution cipher in which
  a modifier word followed by a noun swaps order (``big cat`` -> ``CAT BIG``); each generated target word
  has exactly one source word, so alignment error rate (AER, sure = possible = the known links, the
  predicted link of a target word its top-scored source word) is defined; the explained value of each
  generated token is its log-probability given the source and the earlier generated tokens (forced decoding
  of the model's own greedy output);
* ``lookup``: a 2-layer Llama reads ``[CLS] k1 v1 k2 v2 k3 v3 k4 v4 kq [SEP]`` (distinct keys, distinct
  values) and generates the value of the queried key ``kq``; the truth is the three prompt tokens the answer
  needs: the value, its key in the table, and the queried key (masking any one makes the answer unknowable).

Every prompt has at most 10 maskable tokens, so exact Shapley values of the explained log-probability are
computed from all 2^p coalitions (masked tokens replaced by the token shap's ``Text`` masker uses:
the tokenizer's mask token, else the first token of ``"..."``, :func:`attn_plugins.methods.lrp.mask_token_id`;
the models are trained with that token in place of random non-deciding words, so masked inputs stay in
distribution). Each method is scored per explained token by Spearman against them over the maskable
tokens, by token F1 against the truth, and (translation) by AER; with its cost per explained token in
forward-equivalents (a forward 1, a backward 2; a method that reads attention rows captures once for all
the generated tokens of a text) and milliseconds.

Run: ``attn-plugins bench faithful --only generation --json``; ``python benchmarks/faithful_generation.py``
runs it and merges it into ``benchmarks/results/faithful.json`` under ``generation``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import AttnPluginsError
from .stats import mean_ci

TASK_NAMES = ("decoder_planted", "translation", "lookup")
# The built-in methods tried on every model; one that does not support a model is reported in "errors".
METHODS = (
    "attnlrp",
    "cplrp",
    "cplrp_mask",
    "grad_attention",
    "gae",
    "rollout",
    "raw",
    "norm",
    "flow",
    "alti",
    "decompx",
    "value_zeroing",
)
CLASS_WORDS = ("no", "yes", "so")  # the next token of the decoder classifier, by planted class
GOAL_SPEARMAN = 0.80
GOAL_MAX_FE = 3.0
GOAL_TOKEN_F1 = 0.95
GOAL_AER = 0.10
METRICS = ("spearman", "token_f1", "aer")
HIGHER_IS_BETTER = {"spearman": True, "token_f1": True, "aer": False}


@dataclass
class Config:
    """Sizes of the three models and their training runs."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    lr: float = 3e-3
    batch_size: int = 64
    mask_prob: float = 0.15
    planted_train: int = 4000
    planted_epochs: int = 3
    translation_train: int = 4000
    translation_epochs: int = 6
    lookup_train: int = 48000
    lookup_epochs: int = 4
    lookup_lr: float = 1e-3  # at 3e-3 the lookup stays at chance after 3000 steps (measured)
    n_eval: int = 40
    n_resamples: int = 1000

    @classmethod
    def quick(cls) -> Config:
        """A test-sized run: the same tasks, fewer held-out texts and resamples (training stays whole)."""
        return cls(n_eval=4, n_resamples=50)


# ---------------------------------------------------------------------------- explained steps
@dataclass
class Step:
    """One explained generated token: its capture inputs and target, the truth, the exact Shapley values."""

    key: str
    inputs: dict[str, torch.Tensor]  # what method captures read (prompt, or source + forced decoder input)
    target: Any  # TokenLogProb of the generated token
    row: int  # the query row that produces it (decoder row)
    players: np.ndarray  # maskable key positions
    phi: np.ndarray  # [keys] exact Shapley values (0 on special tokens)
    rationale: np.ndarray  # [keys] bool: the deciding tokens
    values: np.ndarray  # [2^p] the explained value of every coalition

    @property
    def n(self) -> int:
        """How many key tokens the step's scores cover."""
        return len(self.phi)


@dataclass
class Text:
    """One prompt (or source) and the generated tokens of it that are explained."""

    key: str
    inputs: dict[str, torch.Tensor]
    steps: list[Step] = field(default_factory=list)


def masked_values(
    fn: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor, players: np.ndarray, mask_id: int
) -> np.ndarray:
    """The explained values [2^p, steps] of every coalition: players outside it replaced by ``mask_id``.

    Coalition index = bit pattern of the kept players (bit j: player j kept), as
    :func:`attn_plugins.explain.maskers.shapley_values` reads them.
    """
    p = len(players)
    kept = (np.arange(2**p)[:, None] >> np.arange(p)[None, :]) & 1
    batch = ids.repeat(2**p, 1)
    cols = torch.as_tensor(players, dtype=torch.long)
    batch[:, cols] = torch.where(torch.as_tensor(kept, dtype=torch.bool), batch[:, cols], mask_id)
    out = []
    with torch.no_grad():
        for i in range(0, len(batch), 256):
            out.append(fn(batch[i : i + 256]).double())
    return torch.cat(out).numpy()


def log_probs_at(logits: torch.Tensor, rows: Sequence[int], tokens: Sequence[int]) -> torch.Tensor:
    """log p(tokens[j]) at rows[j] of logits [N, T, V], for every row of the batch: [N, steps]."""
    logp = torch.log_softmax(logits[:, list(rows)].float(), dim=-1)
    return logp[:, torch.arange(len(rows)), torch.as_tensor(list(tokens))]


# ---------------------------------------------------------------------------- models
def llama(vocab: int, config: Config, seed: int) -> torch.nn.Module:
    """A tiny random-init Llama language model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=config.hidden,
        intermediate_size=config.hidden * 2,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def marian(vocab: int, config: Config, seed: int, pad: int, eos: int) -> torch.nn.Module:
    """A tiny random-init Marian translation model sharing one vocabulary between source and target."""
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(seed)
    cfg = MarianConfig(
        vocab_size=vocab,
        decoder_vocab_size=vocab,
        d_model=config.hidden,
        encoder_layers=config.layers,
        decoder_layers=config.layers,
        encoder_attention_heads=config.heads,
        decoder_attention_heads=config.heads,
        encoder_ffn_dim=config.hidden * 2,
        decoder_ffn_dim=config.hidden * 2,
        max_position_embeddings=64,
        pad_token_id=pad,
        eos_token_id=eos,
        decoder_start_token_id=pad,
        forced_eos_token_id=None,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        share_encoder_decoder_embeddings=True,
        scale_embedding=True,
    )
    return MarianMTModel(cfg)


def _fit(
    model: torch.nn.Module,
    batches: Callable[[torch.Generator], Any],
    steps_fn: Callable[[Any], torch.Tensor],
    lr: float,
) -> float:
    """AdamW over the batches ``batches(gen)`` yields, loss ``steps_fn(batch)``; returns the seconds taken."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    start = time.perf_counter()
    for batch in batches(gen):
        loss = steps_fn(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return time.perf_counter() - start


def _epochs(n: int, epochs: int, batch_size: int) -> Callable[[torch.Generator], Any]:
    def batches(gen: torch.Generator) -> Any:
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for i in range(0, n, batch_size):
                yield order[i : i + batch_size], gen

    return batches


def _drop(ids: torch.Tensor, maskable: torch.Tensor, prob: float, mask_id: int, gen: torch.Generator) -> torch.Tensor:
    """``ids`` with maskable tokens replaced by ``mask_id`` at rate ``prob`` (masked inputs stay in distribution)."""
    drop = (torch.rand(ids.shape, generator=gen) < prob) & maskable
    return torch.where(drop, torch.full_like(ids, mask_id), ids)


# ---------------------------------------------------------------------------- task (a): decoder classifier
@dataclass
class Trained:
    """A trained model with its tokenizer, the held-out texts to explain and what training measured."""

    name: str
    model: torch.nn.Module
    tokenizer: Any
    texts: list[Text]
    accuracy: float
    train_seconds: float
    mask_id: int
    info: dict[str, Any] = field(default_factory=dict)


def _special(tokenizer: Any, ids: torch.Tensor) -> torch.Tensor:
    return torch.isin(ids, torch.tensor(tokenizer.all_special_ids))


def decoder_planted(config: Config, seed: int) -> Trained:
    """The planted-rationale sentences read by a Llama language model, the class word predicted at [SEP]."""
    from ..explain.targets import resolve
    from ..zoo import tiny_tokenizer
    from . import planted as P

    rng = random.Random(seed)
    tok = tiny_tokenizer("bert")
    mask_id = int(tok.mask_token_id)
    train_data = P.make_examples(config.planted_train, rng, 6, 14)
    # Held-out sentences of 5-8 distractors and 1-2 triggers: at most 10 maskable tokens.
    eval_data = P.make_examples(config.n_eval, rng, 5, 8, neutral=False)
    class_ids = tok.convert_tokens_to_ids(list(CLASS_WORDS))
    model = llama(len(tok), config, seed)
    enc = tok([e.text for e in train_data], padding=True, return_tensors="pt")
    ids, att = enc["input_ids"], enc["attention_mask"]
    last = att.sum(1) - 1  # right padding: the [SEP] row reads the whole sentence
    labels = torch.tensor([class_ids[e.label] for e in train_data])
    triggers = torch.tensor(tok.convert_tokens_to_ids([w for ws in P.TRIGGERS.values() for w in ws]))
    maskable = ~torch.isin(ids, triggers) & ~_special(tok, ids)

    def loss(batch: Any) -> torch.Tensor:
        idx, gen = batch
        x = _drop(ids[idx], maskable[idx], config.mask_prob, mask_id, gen)
        logits = model(input_ids=x, attention_mask=att[idx]).logits
        z = logits[torch.arange(len(idx)), last[idx]]
        # Label smoothing keeps the class word's probability below 1, where its log-probability has a gradient.
        return torch.nn.functional.cross_entropy(z, labels[idx], label_smoothing=0.1)

    seconds = _fit(model, _epochs(len(train_data), config.planted_epochs, config.batch_size), loss, config.lr)
    texts, correct = [], 0
    for n, ex in enumerate(eval_data):
        one = tok(ex.text, return_tensors="pt")
        x = one["input_ids"]
        row = x.shape[1] - 1
        with torch.no_grad():
            z = model(input_ids=x).logits[0, row]
        cls = int(z[class_ids].argmax())
        correct += int(cls == ex.label)
        tid = class_ids[cls]
        spec = resolve(model, tok, ex.text, task="next_token", target=tid)  # ap.explain's target for this token
        players = np.flatnonzero(~_special(tok, x[0]).numpy())
        values = masked_values(
            lambda b, row=row, tid=tid: log_probs_at(model(input_ids=b).logits, [row], [tid]), x, players, mask_id
        )
        rationale = np.concatenate([[False], ex.planted, [False]])
        text = Text(f"decoder_planted.{n}", {"input_ids": x, "attention_mask": one["attention_mask"]})
        text.steps.append(_step(text, 0, spec.gradient_targets[0], row, players, values[:, 0], rationale))
        texts.append(text)
    return Trained("decoder_planted", model, tok, texts, correct / len(eval_data), seconds, mask_id)


def _step(text: Text, j: int, target: Any, row: int, players: np.ndarray, values: np.ndarray, rationale: Any) -> Step:
    from ..explain.maskers import shapley_values

    n = len(rationale)
    return Step(
        key=f"{text.key}.{j}",
        inputs=text.inputs,
        target=target,
        row=row,
        players=players,
        phi=shapley_values(values, players, n),
        rationale=np.asarray(rationale, dtype=bool),
        values=values,
    )


# ---------------------------------------------------------------------------- task (b): translation
MODIFIERS = ("big", "small", "old", "new", "long", "short")
NOUNS = ("cat", "dog", "bird", "tree", "car", "house")
# The cipher: each source word has one target word (a bijection onto words the source never uses).
CIPHER = dict(
    zip(
        MODIFIERS + NOUNS,
        ("very", "really", "quite", "much", "more", "most", "paris", "france", "berlin", "germany", "capital", "water"),
    )
)


def translate(words: Sequence[str]) -> tuple[list[str], list[int]]:
    """The cipher's translation of ``words`` and, per target word, the index of its source word.

    Word by word, except that a modifier followed by a noun swaps order (``big cat`` -> ``capital very``).
    """
    out, align, i = [], [], 0
    while i < len(words):
        if i + 1 < len(words) and words[i] in MODIFIERS and words[i + 1] in NOUNS:
            out += [CIPHER[words[i + 1]], CIPHER[words[i]]]
            align += [i + 1, i]
            i += 2
        else:
            out.append(CIPHER[words[i]])
            align.append(i)
            i += 1
    return out, align


def _sentences(n: int, rng: random.Random, lo: int, hi: int) -> list[list[str]]:
    vocab = MODIFIERS + NOUNS
    return [[rng.choice(vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def translation(config: Config, seed: int) -> Trained:
    """A Marian model trained on the cipher; each generated word explained over the source words."""
    from ..methods.lrp import mask_token_id
    from ..zoo import tiny_tokenizer

    rng = random.Random(seed + 1)
    tok = tiny_tokenizer("seq2seq")
    mask_id = mask_token_id(tok)  # no mask token: shap's Text masker writes "...", whose first token is "."
    pad, eos = int(tok.pad_token_id), int(tok.eos_token_id)
    train_data = _sentences(config.translation_train, rng, 2, 8)
    eval_data = _sentences(config.n_eval, rng, 4, 8)
    model = marian(len(tok), config, seed, pad, eos)
    src = tok([" ".join(w) for w in train_data], padding=True, return_tensors="pt")
    tgt = tok([" ".join(translate(w)[0]) for w in train_data], padding=True, return_tensors="pt")["input_ids"]
    labels = tgt.masked_fill(tgt == pad, -100)
    dec = torch.cat([torch.full((len(tgt), 1), pad), tgt[:, :-1]], 1)
    maskable = ~_special(tok, src["input_ids"])

    def loss(batch: Any) -> torch.Tensor:
        idx, gen = batch
        x = _drop(src["input_ids"][idx], maskable[idx], config.mask_prob, mask_id, gen)
        logits = model(input_ids=x, attention_mask=src["attention_mask"][idx], decoder_input_ids=dec[idx]).logits
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[idx].flatten())

    seconds = _fit(model, _epochs(len(train_data), config.translation_epochs, config.batch_size), loss, config.lr)
    texts, correct = [], 0
    for n, words in enumerate(eval_data):
        reference, align = translate(words)
        one = tok(" ".join(words), return_tensors="pt")
        x = one["input_ids"]
        with torch.no_grad():
            out = model.generate(**one, max_new_tokens=len(reference) + 2, do_sample=False, num_beams=1)[0]
        generated = tok.convert_ids_to_tokens(out[1:].tolist())
        ok = generated == [*reference, tok.eos_token]
        correct += int(ok)
        if not ok:  # the truth is the reference's alignment: a wrong translation has none
            continue
        dec_in = out[None, :-1]  # forced decoding of the model's own output
        tokens = out[1:-1].tolist()  # the generated words; </s> has no source word
        rows = list(range(len(tokens)))
        players = np.flatnonzero(~_special(tok, x[0]).numpy())
        values = masked_values(
            lambda b, d=dec_in, r=rows, t=tokens: log_probs_at(
                model(input_ids=b, decoder_input_ids=d.expand(len(b), -1)).logits, r, t
            ),
            x,
            players,
            mask_id,
        )
        inputs = {"input_ids": x, "attention_mask": one["attention_mask"], "decoder_input_ids": dec_in}
        text = Text(f"translation.{n}", inputs)
        from ..explain.targets import TokenLogProb

        for j, (row, tid) in enumerate(zip(rows, tokens)):
            truth = np.zeros(x.shape[1], dtype=bool)
            truth[align[j]] = True  # source word i is token i: one token per word, no prefix token
            text.steps.append(_step(text, j, TokenLogProb(row, tid), row, players, values[:, j], truth))
        texts.append(text)
    return Trained("translation", model, tok, texts, correct / len(eval_data), seconds, mask_id)


# ---------------------------------------------------------------------------- task (c): lookup
KEYS = ("what", "who", "where", "when", "why", "how", "which", "paris", "france", "berlin")
VALUES = ("he", "she", "we", "they", "me", "him", "her", "us", "them", "you")
PAIRS = 4


def lookup_example(rng: random.Random) -> tuple[list[str], int]:
    """``k1 v1 ... k4 v4 kq`` (distinct keys, distinct values) and which pair the query asks for."""
    keys, values = rng.sample(KEYS, PAIRS), rng.sample(VALUES, PAIRS)
    q = rng.randrange(PAIRS)
    return [w for kv in zip(keys, values) for w in kv] + [keys[q]], q


def lookup(config: Config, seed: int) -> Trained:
    """A Llama language model that answers the value of the queried key; the answer explained over the prompt.

    The prompt is ``[CLS] k1 v1 ... k4 v4 kq`` without a closing [SEP]: the answer is the next token at the
    query itself, which two layers can find (a previous-token head, then a match of the query with the key
    each value follows); the explained value is ``ap.explain``'s ``next_token`` target at that row.
    """
    from ..explain.targets import TokenLogProb
    from ..zoo import tiny_tokenizer

    rng = random.Random(seed + 2)
    tok = tiny_tokenizer("bert")
    mask_id = int(tok.mask_token_id)
    train_data = [lookup_example(rng) for _ in range(config.lookup_train)]
    eval_data = [lookup_example(rng) for _ in range(config.n_eval)]
    model = llama(len(tok), config, seed + 2)

    def encode(words: Sequence[str]) -> list[int]:
        return [int(tok.cls_token_id), *tok.convert_tokens_to_ids(list(words))]

    ids = torch.tensor([encode(w) for w, _ in train_data])
    answer = torch.tensor(tok.convert_tokens_to_ids([w[2 * q + 1] for w, q in train_data]))
    q = torch.tensor([q for _, q in train_data])
    # Only tokens of the other pairs are masked in training: the three deciding tokens always stay.
    pos = torch.arange(ids.shape[1])[None]
    row = ids.shape[1] - 1
    deciding = (pos == 2 * q[:, None] + 1) | (pos == 2 * q[:, None] + 2) | (pos == row)
    maskable = ~deciding & ~_special(tok, ids)

    def loss(batch: Any) -> torch.Tensor:
        idx, gen = batch
        x = _drop(ids[idx], maskable[idx], config.mask_prob, mask_id, gen)
        z = model(input_ids=x).logits[:, row]
        return torch.nn.functional.cross_entropy(z, answer[idx], label_smoothing=0.1)

    seconds = _fit(model, _epochs(len(train_data), config.lookup_epochs, config.batch_size), loss, config.lookup_lr)
    texts, correct = [], 0
    for n, (words, qi) in enumerate(eval_data):
        x = torch.tensor([encode(words)])
        with torch.no_grad():
            tid = int(model(input_ids=x).logits[0, row].argmax())  # the token the model generates
        correct += int(tok.convert_ids_to_tokens(tid) == words[2 * qi + 1])
        players = np.flatnonzero(~_special(tok, x[0]).numpy())
        values = masked_values(
            lambda b, tid=tid: log_probs_at(model(input_ids=b).logits, [row], [tid]), x, players, mask_id
        )
        truth = np.zeros(x.shape[1], dtype=bool)
        truth[[2 * qi + 1, 2 * qi + 2, row]] = True  # the key in the table, its value, the query ([CLS] first)
        text = Text(f"lookup.{n}", {"input_ids": x, "attention_mask": torch.ones_like(x)})
        text.steps.append(_step(text, 0, TokenLogProb(row, tid), row, players, values[:, 0], truth))
        texts.append(text)
    return Trained("lookup", model, tok, texts, correct / len(eval_data), seconds, mask_id)


TASKS: dict[str, Callable[[Config, int], Trained]] = {
    "decoder_planted": decoder_planted,
    "translation": translation,
    "lookup": lookup,
}


# ---------------------------------------------------------------------------- scoring
def aer(scores: np.ndarray, truth: np.ndarray, players: np.ndarray) -> float:
    """Alignment error rate of one target word: predicted link = its top-scored source word; sure = possible = truth.

    AER = 1 − (|A ∩ S| + |A ∩ P|) / (|A| + |S|), with P = S: 1 − 2|A ∩ S| / (|A| + |S|).
    """
    a = {int(players[np.argmax(scores[players])])}
    s = set(np.flatnonzero(truth).tolist())
    return 1.0 - 2 * len(a & s) / (len(a) + len(s))


def step_metrics(scores: np.ndarray, step: Step, with_aer: bool) -> dict[str, float]:
    """Spearman with the exact Shapley values over the maskable tokens, token F1 against the truth (and AER)."""
    from ..explain.compare import agreement
    from ..metrics import plausibility

    s = np.asarray(scores, dtype=np.float64)
    protected = np.ones(step.n, dtype=bool)
    protected[step.players] = False
    out = {
        "spearman": agreement(s[step.players], step.phi[step.players], 3)["spearman"],
        "token_f1": plausibility.token_f1(s, step.rationale, protected=protected),
    }
    if with_aer:
        out["aer"] = aer(s, step.rationale, step.players)
    return out


@dataclass
class Rows:
    """Per-method metric values, one per explained token, with cost per explained token."""

    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    fe: dict[str, list[float]] = field(default_factory=dict)
    ms: dict[str, list[float]] = field(default_factory=dict)
    kind: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, kind: str, metrics: dict[str, float], fe: float, seconds: float) -> None:
        """One explained token's metrics for ``name`` and what explaining it cost."""
        self.kind.setdefault(name, kind)
        per = self.values.setdefault(name, {})
        for m, v in metrics.items():
            per.setdefault(m, []).append(v)
        self.fe.setdefault(name, []).append(fe)
        self.ms.setdefault(name, []).append(1000 * seconds)

    def summary(self, seed: int, n_resamples: int) -> dict[str, Any]:
        """Per method: mean and bootstrap 95 % interval of each metric, forward-equivalents and ms per token."""
        out = {}
        for name, per in self.values.items():
            entry: dict[str, Any] = {"kind": self.kind[name], "tokens": len(self.fe[name])}
            for m, vals in per.items():
                finite = [v for v in vals if v is not None and np.isfinite(v)]
                if finite:  # a constant score vector has no rank: left out, not counted as zero
                    entry[m] = mean_ci(finite, seed, n_resamples)
            entry["forward_equivalents"] = round(float(np.mean(self.fe[name])), 3)
            entry["ms_per_token"] = round(float(np.median(self.ms[name])), 3)
            out[name] = entry
        return out


def score_text(trained: Trained, text: Text, name: str, rows: Rows, with_aer: bool) -> None:
    """One method on every explained token of ``text``: one capture per token when the method explains a
    target (or reads gradients of it), else one capture for all of the text's tokens."""
    from ..methods import get_method
    from .forward_cost import record_cost

    method = get_method(name)
    model, tok = trained.model, trained.tokenizer
    per_target = method.explains_target or "gradients" in getattr(method, "requires", ())
    shared = None
    if not per_target:
        start = time.perf_counter()
        record = method.capture(model, tok, inputs=text.inputs)
        shared = (record, time.perf_counter() - start, record_cost(method, record) / len(text.steps))
    for step in text.steps:
        start = time.perf_counter()
        if per_target:
            record = method.capture(model, tok, inputs=step.inputs, gradient_target=step.target)
            scores = method(record) if method.explains_target else method(record, position=step.row)
            fe = record_cost(method, record)
            seconds = time.perf_counter() - start
        else:
            record, captured, fe = shared
            scores = method(record, position=step.row)
            seconds = time.perf_counter() - start + captured / len(text.steps)
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (step.n,):
            raise AttnPluginsError(f"{name} gave {scores.shape} scores for {step.n} tokens")
        rows.add(
            name,
            "relevance" if method.explains_target else "attention rows",
            step_metrics(scores, step, with_aer),
            fe,
            seconds,
        )


def score_references(trained: Trained, text: Text, rows: Rows, with_aer: bool, rng: np.random.Generator) -> None:
    """Exact Shapley values (the oracle), leave-one-out occlusion and random scores on each explained token.

    Both model-based references read the coalition values: one forward per masked input covers every
    generated token of the text, so their cost per token is the inputs evaluated over the tokens explained.
    """
    m = len(text.steps)
    for step in text.steps:
        p = len(step.players)
        full = 2**p - 1
        loo = np.zeros(step.n)
        loo[step.players] = step.values[full] - step.values[full ^ (1 << np.arange(p))]
        rows.add("exact Shapley", "reference", step_metrics(step.phi, step, with_aer), 2**p / m, 0.0)
        rows.add("occlusion (leave-one-out)", "reference", step_metrics(loo, step, with_aer), (p + 1) / m, 0.0)
        rows.add("random", "reference", step_metrics(rng.random(step.n), step, with_aer), 0.0, 0.0)


def task_result(trained: Trained, methods: Sequence[str], seed: int, n_resamples: int) -> dict[str, Any]:
    """Every method and reference on one trained task: per-method summaries, errors, the model's accuracy."""
    with_aer = trained.name == "translation"
    rows, errors = Rows(), {}
    rng = np.random.default_rng(seed)
    for name in methods:
        try:
            for text in trained.texts:
                score_text(trained, text, name, rows, with_aer)
        except Exception as exc:  # a method that does not support the model is reported; the others still run
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            for d in (rows.values, rows.fe, rows.ms, rows.kind):
                d.pop(name, None)
    for text in trained.texts:
        score_references(trained, text, rows, with_aer, rng)
    return {
        "model": type(trained.model).__name__,
        "accuracy": round(trained.accuracy, 4),
        "train_seconds": round(trained.train_seconds, 1),
        "texts": len(trained.texts),
        "tokens": sum(len(t.steps) for t in trained.texts),
        "mask_token": trained.tokenizer.convert_ids_to_tokens(trained.mask_id),
        "methods": rows.summary(seed, n_resamples),
        "errors": errors,
        **trained.info,
    }


def goals(tasks: dict[str, Any]) -> dict[str, Any]:
    """Per task: the best method at <= 3 forward-equivalents per token by Spearman, and the issue's goals."""
    out: dict[str, Any] = {
        "spearman_goal": GOAL_SPEARMAN,
        "max_forward_equivalents": GOAL_MAX_FE,
        "token_f1_goal": GOAL_TOKEN_F1,
        "aer_goal": GOAL_AER,
    }
    for task, block in tasks.items():
        cheap = {
            n: m
            for n, m in block["methods"].items()
            if m["kind"] != "reference" and m["forward_equivalents"] <= GOAL_MAX_FE and "spearman" in m
        }
        if not cheap:
            continue
        best = max(cheap, key=lambda n: cheap[n]["spearman"]["mean"])
        entry = {
            "best": best,
            "spearman": cheap[best]["spearman"],
            "forward_equivalents": cheap[best]["forward_equivalents"],
            "met_spearman": cheap[best]["spearman"]["mean"] >= GOAL_SPEARMAN,
            "token_f1": cheap[best]["token_f1"],
            "best_token_f1": max(cheap, key=lambda n: cheap[n]["token_f1"]["mean"]),
        }
        if task == "decoder_planted":
            entry["met_token_f1"] = cheap[best]["token_f1"]["mean"] >= GOAL_TOKEN_F1
        if task == "translation":
            entry["aer"] = cheap[best]["aer"]
            entry["best_aer"] = min(cheap, key=lambda n: cheap[n]["aer"]["mean"])
            entry["met_aer"] = cheap[best]["aer"]["mean"] <= GOAL_AER
        out[task] = entry
    return out


def run(
    quick: bool = False,
    seed: int = 0,
    threads: int = 1,
    tasks: Sequence[str] = TASK_NAMES,
    methods: Sequence[str] = METHODS,
) -> dict[str, Any]:
    """Train each task's model, score every method on it; the JSON-ready ``generation`` section."""
    from .threads import torch_threads

    config = Config.quick() if quick else Config()
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "quick": quick,
        "seed": seed,
        "threads": threads,
        "date": time.strftime("%Y-%m-%d"),
        "config": config.__dict__,
        "higher_is_better": HIGHER_IS_BETTER,
        "tasks": {},
    }
    with torch_threads(threads):
        for task in tasks:
            trained = TASKS[task](config, seed)
            out["tasks"][task] = task_result(trained, methods, seed, config.n_resamples)
    out["goals"] = goals(out["tasks"])
    out["elapsed_seconds"] = round(time.perf_counter() - t0, 1)
    return out
