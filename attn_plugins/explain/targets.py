"""What an explanation explains, by task: the scalar outputs, the query rows that produce them, and the model
function shap calls on masked texts.

Tasks: ``classification`` (predicted or given class), ``token_classification`` (one token's class),
``question_answering`` (start and end of the predicted span), ``similarity`` (cosine similarity of the
mean-pooled sentence embedding to a reference text; without a reference, to the text's own embedding),
``next_token`` (the log-probability of the token a language model predicts next: after the text for a
causal LM, the first token an encoder-decoder generates from it), ``generation`` (each token a causal LM
generates) and ``seq2seq`` (each token an encoder-decoder generates).

Models whose input is not text (ViT's ``pixel_values``, Whisper's ``input_features``) are explained from
``inputs=`` (:func:`resolve_inputs`): an image classifier's class logit over its patches, a bare vision
encoder's [CLS] embedding (its similarity to itself, as a text encoder's), a speech encoder-decoder's first
generated token over its encoder frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..capture import model_max_length
from ..errors import InputError, UnsupportedModelError
from .generation import Prompt, chat_prompt, contrast_ids, contrast_token_id, is_chat, target_ids, text_prompt

TASKS = (
    "classification",
    "token_classification",
    "question_answering",
    "similarity",
    "next_token",
    "generation",
    "seq2seq",
)
# Generated tokens explained by the generation tasks when max_new_tokens is not given.
GENERATED_TOKENS = 8

ModelFn = Callable[[Sequence[str]], np.ndarray]


class GradientTarget:
    """The explained scalar of a model output, as a callable, with its conservative form for relevance methods.

    ``GradientTarget(fn)(output)`` is the scalar gradient methods differentiate; ``relevance(output)`` is
    the same value written so that it is linear in the last hidden states (LRP and decompositions
    start their backward there, and input × gradient of it adds up to the value).
    """

    def __init__(self, fn: Callable[[Any], torch.Tensor], relevance: Callable[[Any], torch.Tensor] | None = None):
        self.fn = fn
        self.relevance = relevance or fn

    def __call__(self, output: Any) -> torch.Tensor:
        return self.fn(output)


@dataclass
class Target:
    """One example's explained outputs: how to capture it, which rows to read, what shap should call."""

    task: str
    kind: str  # the attention kind whose rows are read
    positions: list[Any]  # one query position per output ("first", "mean", an index)
    gradient_targets: list[Callable[[Any], torch.Tensor]]  # one scalar per output, for gradient captures
    output_names: list[str] | None  # None for a single output
    text: str | None = None  # capture from text ...
    inputs: dict[str, torch.Tensor] | None = None  # ... or from token ids (pairs, generation)
    keys: slice = field(default_factory=lambda: slice(None))  # explained key tokens (generation: the prompt)
    fn: ModelFn | None = None  # masked texts -> [N] or [N, outputs]; None when shap cannot mask this task
    label: str | None = None  # a human name for a single output (the class label)
    meta: dict[str, Any] = field(default_factory=dict)
    # Names of the explained features and which are special, for targets without text (patches, frames)
    # and generations (prompt or source, then the earlier generated tokens; a chat template's tokens are
    # special); None: the record's tokens and special-tokens mask.
    feature_names: list[str] | None = None
    special: list[bool] | None = None
    # The weight of each query row in the explained output (a mean-pooled target reads every row): a
    # callable computing them (one forward, or from given last hidden states), None when the target reads
    # one row. See row_weights() and fill_row_weights().
    row_weights: Callable[..., np.ndarray] | None = None


# ---------------------------------------------------------------------------- models
def unwrap(model: Any, tokenizer: Any, text: bool = True) -> tuple[Any, Any, str]:
    """(transformers model, tokenizer, pooling) for a plain model or a sentence-transformers model; a model
    that reads no text (``text=False``: images, audio) needs no tokenizer."""
    if any(c.__name__ == "SentenceTransformer" for c in type(model).__mro__):
        first = model[0]
        hf = getattr(first, "auto_model", None)
        if hf is None:
            raise UnsupportedModelError("the sentence-transformers model's first module has no transformers model")
        pooling = "mean"
        for module in list(model)[1:]:
            if getattr(module, "pooling_mode_cls_token", False):
                pooling = "cls"
            elif getattr(module, "pooling_mode_mean_tokens", False):
                pooling = "mean"
        return hf, tokenizer if tokenizer is not None else model.tokenizer, pooling
    if tokenizer is None and text:
        raise InputError("explaining texts needs the model's tokenizer")
    return model, tokenizer, "mean"


def detect_task(model: Any, reference: str | None = None, max_new_tokens: int | None = None) -> str:
    """The task a model's head performs, from its class; base encoders explain similarity (to ``reference``,
    or to the text's own embedding).

    A language model (causal or encoder-decoder) explains its next token (``next_token``: the first token an
    encoder-decoder generates), or each of ``max_new_tokens`` generated tokens when that is given.
    """
    name = type(model).__name__
    config = getattr(model, "config", None)
    if name.endswith(("ForSequenceClassification", "ForImageClassification", "ForAudioClassification")):
        return "classification"
    if name.endswith("ForTokenClassification"):
        return "token_classification"
    if name.endswith("ForQuestionAnswering"):
        return "question_answering"
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "generate") and _has_lm_head(model):
        return "seq2seq" if max_new_tokens is not None else "next_token"
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "generation" if max_new_tokens is not None else "next_token"
    if reference is not None or _is_encoder(model):
        return "similarity"
    raise UnsupportedModelError(
        f"{name} has no task head to explain (classification, token classification, question answering or a "
        "language-model head) and is no encoder whose embedding could be explained; pass task= and reference="
    )


def _has_lm_head(model: Any) -> bool:
    """Whether the model maps hidden states to a vocabulary (MarianMTModel, T5ForConditionalGeneration, ...)."""
    get = getattr(model, "get_output_embeddings", None)
    try:
        return callable(get) and get() is not None
    except (AttributeError, NotImplementedError):
        return False


def _is_encoder(model: Any) -> bool:
    """A base encoder without a head (a sentence-embedding model): its output has last hidden states to pool."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False) or getattr(config, "is_decoder", False):
        return False
    if not type(model).__name__.endswith("Model") or not hasattr(model, "modules"):
        return False
    # Decoder-only base models (GPT-2, Llama) run causal attention: not sentence encoders.
    return not any(getattr(m, "is_causal", False) is True for m in model.modules())


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _encode(tokenizer: Any, texts: Sequence[str], model: Any, right: bool = False) -> dict[str, torch.Tensor]:
    # Explained texts already fit (see fit_text); shap's masked variants of them have as many tokens, but a
    # masker may still produce a longer string, which is cut rather than crash the model's position table.
    limit = model_max_length(model, tokenizer)
    cut = {"truncation": True, "max_length": limit} if limit is not None else {}
    if right:  # padding after the text keeps every real token's position (left padding shifts absolute ones)
        cut["padding_side"] = "right"
    enc = tokenizer(list(texts), padding=True, return_tensors="pt", **cut)
    keep = ("input_ids", "attention_mask", "token_type_ids")
    return {k: v.to(_device(model)) for k, v in enc.items() if k in keep}


def describe_example(example: Any, index: int | None = None) -> str:
    """How an error names an example: ``text 2 ("the movie was…")``, or ``the text`` for a single one."""
    if is_chat(example):  # chat messages: their contents
        example = [str(m.get("content", "")) for m in example]
    shown = " / ".join(map(str, example)) if isinstance(example, (tuple, list)) else str(example)
    shown = shown if len(shown) <= 40 else shown[:39] + "…"
    return f"text {index} ({shown!r})" if index is not None else f"the text ({shown!r})"


def fit_text(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    truncation: bool = False,
    max_length: int | None = None,
    name: str = "the text",
    reserve: int = 0,
) -> tuple[str, int | None]:
    """``text`` if it fits the model, else its longest prefix that does (with ``truncation``) or InputError.

    The limit is ``max_length`` or the model's own (:func:`model_max_length`), less ``reserve`` positions
    (room for generated tokens). The prefix ends at a token boundary of the text, so every later
    tokenization of it (the capture, shap's masked variants) sees the same tokens. Returns the text to
    explain and, when it was cut, the token count of the whole text (else None).
    """
    limit = max_length if max_length is not None else model_max_length(model, tokenizer)
    if limit is None:
        return text, None
    limit -= reserve
    try:  # the whole text is only counted here: no "sequence length is longer" warning for a text to be cut
        n = len(tokenizer(text, verbose=False)["input_ids"])
    except TypeError:  # a tokenizer without transformers' keyword
        n = len(tokenizer(text)["input_ids"])
    if n <= limit:
        return text, None
    if not truncation:
        room = f"at most {limit}" + (f" (leaving {reserve} for generated tokens)" if reserve else "")
        raise InputError(
            f"{name} has {n} tokens but the model accepts {room}; pass truncation=True (CLI: --truncate) to cut it"
        )
    if limit < 1:
        raise InputError(f"{name} cannot be cut to fit: the model leaves no room for input tokens")
    return _prefix(tokenizer, text, limit, name), n


def _prefix(tokenizer: Any, text: str, limit: int, name: str) -> str:
    """The longest prefix of ``text``, ending at a token boundary, that tokenizes to at most ``limit`` tokens."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(
            text, truncation=True, max_length=limit, return_offsets_mapping=True, return_special_tokens_mask=True
        )
        ends = [end for (_, end), special in zip(enc["offset_mapping"], enc["special_tokens_mask"]) if not special]
        # A sub-word tokenizer can merge differently at the new end of the text: back off a token at a time.
        for end in reversed(ends):
            prefix = text[:end]
            if prefix.strip() and len(tokenizer(prefix)["input_ids"]) <= limit:
                return prefix
    else:
        ids = tokenizer(text, truncation=True, max_length=limit)["input_ids"]
        prefix = tokenizer.decode(ids, skip_special_tokens=True)
        if prefix.strip() and len(tokenizer(prefix)["input_ids"]) <= limit:
            return prefix
    raise InputError(f"{name} cannot be cut to {limit} tokens at a token boundary")


def _check_class(index: int, n: int) -> int:
    if not isinstance(index, (int, np.integer)) or not 0 <= int(index) < n:
        raise InputError(f"class index {index!r} out of range for {n} classes")
    return int(index)


def _label(model: Any, index: int) -> str:
    labels = getattr(getattr(model, "config", None), "id2label", None) or {}
    return str(labels.get(index, labels.get(str(index), f"class {index}")))


def pooled(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence embeddings [N, D] from token states [N, T, D]: masked mean, or the first token."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


# ---------------------------------------------------------------------------- resolution
def resolve(
    model: Any,
    tokenizer: Any,
    example: Any,
    task: str | None = None,
    target: int | str | None = None,
    token: int | None = None,
    reference: str | None = None,
    max_new_tokens: int | None = None,
    pooling: str = "mean",
    cache: dict[Any, Any] | None = None,
    *,
    truncation: bool = False,
    max_length: int | None = None,
    name: str | None = None,
    contrast: str | None = None,
    contrast_token: Any = None,
) -> Target:
    """The :class:`Target` of one example (a text, a (question, context) pair for QA, or chat messages).

    ``cache`` (a dict kept by the caller across examples) holds the reference embedding of a
    similarity target, so a batch or corpus embeds its reference sentence once, not once per text.
    A text longer than the model accepts (or ``max_length``) is cut to its longest prefix that fits when
    ``truncation`` is set (the target's ``meta['truncated']`` says so), else it is an InputError naming
    the example as ``name`` (default: ``the text``). Without ``task``, a language model explains its next
    token, or ``max_new_tokens`` generated tokens when given (``generation`` and ``seq2seq`` given as the
    task generate :data:`GENERATED_TOKENS` unless told), or each token of a given continuation
    (``target="..."``, forced decoding), or as many generated tokens as a ``contrast`` continuation has.
    ``contrast_token`` / ``contrast`` explain log p(token) − log p(contrast token) at each step. A language
    model's prompt may be chat messages (``[{"role": "user", "content": "..."}]``), rendered with the
    tokenizer's chat template; the template's own tokens are marked special (:func:`.generation.chat_prompt`).
    """
    main = getattr(model, "main_input_name", "input_ids")
    if main not in ("input_ids", None):
        raise InputError(
            f"{type(model).__name__} reads {main}, not text: pass inputs={{{main!r}: tensor}} instead of a text"
        )
    forced = isinstance(target, str)
    # A given continuation or a contrast continuation asks for generated tokens, as max_new_tokens does.
    wants = max_new_tokens if max_new_tokens is not None else (1 if forced or contrast is not None else None)
    task = task or detect_task(model, reference, wants)
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
    generating = task in ("generation", "seq2seq")
    if (forced or contrast is not None) and not generating:
        what = "a target continuation (target='...')" if forced else "contrast="
        raise InputError(f"{what} explains generated tokens; task {task!r} generates none")
    if contrast_token is not None and task not in ("next_token", "generation", "seq2seq"):
        raise InputError(f"contrast_token= compares a language model's tokens; task {task!r} has none")
    if forced and max_new_tokens is not None:
        raise InputError("pass max_new_tokens (generate) or target='...' (a given continuation), not both")
    if max_new_tokens is not None and (not isinstance(max_new_tokens, int) or max_new_tokens < 1):
        raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    fit = {"truncation": truncation, "max_length": max_length, "name": name or describe_example(example)}
    if task == "question_answering":
        return _qa(model, tokenizer, example, **fit)
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    if is_chat(example):
        if task not in ("next_token", "generation", "seq2seq"):
            raise InputError(f"chat messages are a language model's prompt; task {task!r} explains texts")
        prompt = chat_prompt(tokenizer, example)
        limit = max_length if max_length is not None else model_max_length(model, tokenizer)
        if limit is not None and len(prompt.ids) + (0 if seq2seq else max_new_tokens or 1) > limit:
            raise InputError(f"the chat prompt has {len(prompt.ids)} tokens, too many for the model's {limit}")
        original = None
    else:
        text = _text(example)
        n_out = 0
        if task == "generation":
            n_out = len(target_ids(tokenizer, target, False)) if forced else max_new_tokens or GENERATED_TOKENS
        text, original = fit_text(model, tokenizer, text, **fit, reserve=n_out)
        prompt = None
    if generating or (prompt is not None and task == "next_token"):
        given = target_ids(tokenizer, target, seq2seq) if forced else None
        if contrast is not None and not forced and max_new_tokens is None:
            max_new_tokens = len(target_ids(tokenizer, contrast, seq2seq, "contrast"))
        spec = _continuation(
            model,
            tokenizer,
            prompt if prompt is not None else text_prompt(tokenizer, text),
            task="next_token" if task == "next_token" else ("seq2seq" if seq2seq else "generation"),
            max_new_tokens=1 if task == "next_token" else (max_new_tokens or GENERATED_TOKENS),
            given=given,
            contrast=contrast,
            contrast_token=contrast_token,
            token_id=target if task == "next_token" else None,
        )
    elif task == "classification":
        spec = _classification(model, tokenizer, text, target, cache)
    elif task == "token_classification":
        spec = _token_classification(model, tokenizer, text, target, token)
    elif task == "similarity":
        spec = _similarity(model, tokenizer, text, reference, pooling, cache, truncation, max_length)
    else:
        spec = _next_token(model, tokenizer, text, target, contrast_token, cache)
    if original is not None:
        spec.meta.update(truncated=True, original_tokens=original)
    return spec


def _text(example: Any) -> str:
    if not isinstance(example, str):
        raise InputError(f"expected a text, got {type(example).__name__}")
    if not example.strip():
        raise InputError("the text is empty: there is nothing to explain")
    return example


def _forward(model: Any, inputs: dict[str, torch.Tensor]) -> Any:
    with torch.no_grad():
        return model(**inputs)


def predict_logits(
    model: Any, tokenizer: Any, texts: Sequence[str], task: str, cache: dict[Any, Any], batch_size: int = 32
) -> None:
    """Put in ``cache`` the logits each text's ``classification`` or ``next_token`` target picks its class or
    token from, one right-padded forward per ``batch_size`` texts (resolving texts one by one runs one each);
    :func:`resolve` takes (and drops) them from there."""
    if task not in ("classification", "next_token"):
        raise InputError(f"predict_logits reads classification and next_token outputs, not {task!r}")
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        if task == "classification":  # each example's output, as one forward of it alone gives
            rows = _forward(model, _encode(tokenizer, chunk, model, right=True)).logits
        else:  # right padding: every text keeps the positions it has alone
            rows = _next_token_rows(model, tokenizer, chunk, right=True)
        for text, row in zip(chunk, rows):
            cache[("logits", task, text)] = row


def _with_decoder_start(model: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``inputs`` with an encoder-decoder's decoder reading its start token alone (one row per example)."""
    n = int(next(iter(inputs.values())).shape[0])
    start = torch.full((n, 1), decoder_start(model), dtype=torch.long, device=_device(model))
    return {**inputs, "decoder_input_ids": start}


def _next_token_rows(model: Any, tokenizer: Any, texts: Sequence[str], right: bool = False) -> torch.Tensor:
    """Each text's next-token logits ``[texts, vocab]``: an encoder-decoder's first decoder row, a causal LM's
    last real row (whichever side the batch is padded on)."""
    batch = _encode(tokenizer, texts, model, right=right)
    if getattr(model.config, "is_encoder_decoder", False):
        return _forward(model, _with_decoder_start(model, batch)).logits[:, 0]
    out = _forward(model, batch).logits
    return out[torch.arange(out.shape[0], device=out.device), _last_rows(batch["attention_mask"])]


def _logits(
    model: Any, enc: dict[str, torch.Tensor], cache: dict[Any, Any] | None, task: str, text: str, row: Any
) -> torch.Tensor:
    """The logits of ``text``'s explained row: from :func:`predict_logits` when it put them in ``cache``, else one forward."""
    found = cache.pop(("logits", task, text), None) if cache is not None else None
    return found if found is not None else _forward(model, enc).logits[0, row]


def _classification(
    model: Any, tokenizer: Any, text: str, target: int | None, cache: dict[Any, Any] | None = None
) -> Target:
    logits = _logits(model, _encode(tokenizer, [text], model), cache, "classification", text, slice(None))
    cls = int(logits.argmax()) if target is None else _check_class(target, logits.shape[-1])
    causal = bool(getattr(model.config, "is_decoder", False)) or type(model).__name__.startswith(
        ("GPT", "Llama", "Mistral", "Qwen", "Gemma", "Phi", "OPT", "Bloom", "Falcon")
    )

    def fn(texts: Sequence[str]) -> np.ndarray:
        out = _forward(model, _encode(tokenizer, texts, model)).logits
        if out.dim() == 3:  # defensive: some heads return per-token logits
            out = out[:, -1]
        return out[:, cls].float().cpu().numpy()

    return Target(
        task="classification",
        kind="self",
        # BERT-like classifiers pool the first token; decoder classifiers read the last one.
        positions=["last" if causal else "first"],
        gradient_targets=[lambda out: out.logits[0, cls]],
        output_names=None,
        text=text,
        fn=fn,
        label=_label(model, cls),
        meta={"class": cls},
    )


def _token_classification(model: Any, tokenizer: Any, text: str, target: int | None, token: int | None) -> Target:
    enc = _encode(tokenizer, [text], model)
    n = enc["input_ids"].shape[1]
    if token is None:
        raise InputError("token classification explains one token: pass token=<index of the token>")
    if not -n <= int(token) < n:
        raise InputError(f"token {token} out of range for {n} tokens")
    t = int(token) % n
    logits = _forward(model, enc).logits[0, t]
    cls = int(logits.argmax()) if target is None else _check_class(target, logits.shape[-1])

    def fn(texts: Sequence[str]) -> np.ndarray:
        out = _forward(model, _encode(tokenizer, texts, model)).logits
        # The masker replaces tokens one for one, so the explained token keeps its index.
        return out[:, min(t, out.shape[1] - 1), cls].float().cpu().numpy()

    return Target(
        task="token_classification",
        kind="self",
        positions=[t],
        gradient_targets=[lambda out: out.logits[0, t, cls]],
        output_names=None,
        text=text,
        fn=fn,
        label=_label(model, cls),
        meta={"class": cls, "token": t},
    )


def _qa(model: Any, tokenizer: Any, example: Any, *, truncation: bool, max_length: int | None, name: str) -> Target:
    if not (isinstance(example, (tuple, list)) and len(example) == 2 and all(isinstance(x, str) for x in example)):
        raise InputError("question answering explains (question, context) pairs of strings")
    question, context = example
    if not question.strip() or not context.strip():
        raise InputError("the question and the context must both be non-empty")
    limit = max_length if max_length is not None else model_max_length(model, tokenizer)
    n = len(tokenizer(question, context)["input_ids"])
    truncated = limit is not None and n > limit
    if truncated and not truncation:
        raise InputError(
            f"{name} has {n} tokens (question and context) but the model accepts at most {limit}; "
            "pass truncation=True (CLI: --truncate) to cut the context"
        )
    cut = {"truncation": "only_second", "max_length": limit} if truncated else {}
    enc = tokenizer(question, context, return_tensors="pt", **cut)
    inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    out = _forward(model, inputs)
    start = int(out.start_logits[0].argmax())
    # The end is the best position at or after the start, as QA pipelines decode spans.
    end_logits = out.end_logits[0].clone()
    end_logits[:start] = float("-inf")
    end = int(end_logits.argmax())
    return Target(
        task="question_answering",
        kind="self",
        positions=[start, end],
        gradient_targets=[lambda o: o.start_logits[0, start], lambda o: o.end_logits[0, end]],
        output_names=["start", "end"],
        inputs=inputs,
        meta={"start": start, "end": end, **({"truncated": True, "original_tokens": n} if truncated else {})},
    )


def fill_row_weights(model: Any, tokenizer: Any, specs: Sequence[Target]) -> None:
    """Compute the row weights of many plain-text targets with one padded forward (each keeps its own)."""
    specs = [s for s in specs if s.row_weights is not None and isinstance(s.text, str)]
    if len(specs) < 2:
        return
    enc = _encode(tokenizer, [s.text for s in specs], model, right=True)
    hidden = _forward(model, enc).last_hidden_state
    real = enc["attention_mask"].bool()
    for spec, h, keep in zip(specs, hidden, real):
        spec.row_weights(h[keep])  # the real tokens' rows, in order


def row_weights(hidden: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """w_i = h_i · ∂f/∂h_i for f = cos(mean_i h_i, r) with the norm of the mean held constant: Σ_i w_i = f.

    A mean-pooled similarity reads every row of the last layer, each by how far it points along the
    reference: ∂f/∂h_i = r / (T ‖e‖ ‖r‖), so no backward pass is needed. Used as query-row weights,
    they give a method's rows the share each has in the explained similarity.
    """
    h = hidden.detach().double()
    r = reference.detach().double()
    e = h.mean(0)
    return ((h @ r) / (h.shape[0] * e.norm() * r.norm())).cpu().numpy()


def _similarity(
    model: Any,
    tokenizer: Any,
    text: str,
    reference: str | None,
    pooling: str,
    cache: dict[Any, Any] | None = None,
    truncation: bool = False,
    max_length: int | None = None,
) -> Target:
    """Cosine similarity to the reference's embedding; with ``reference=None``, to the text's own embedding."""
    if reference is not None and not str(reference).strip():
        raise InputError("similarity needs a non-empty reference text: pass reference='...'")
    if reference is not None:  # None: the text's own embedding is the reference
        reference, _ = fit_text(
            model, tokenizer, str(reference), truncation=truncation, max_length=max_length, name="the reference text"
        )
    if pooling not in ("mean", "cls"):
        raise InputError(f"pooling must be 'mean' or 'cls', not {pooling!r}")

    def embed(texts: Sequence[str]) -> torch.Tensor:
        enc = _encode(tokenizer, texts, model, right=True)
        return pooled(_forward(model, enc).last_hidden_state, enc["attention_mask"], pooling)

    own = reference is None
    key = ("similarity", text if own else reference, pooling)
    ref = cache.get(key) if cache is not None and not own else None
    if ref is None:
        ref = embed([text if own else reference])[0]
        if cache is not None and not own:
            cache[key] = ref

    def fn(texts: Sequence[str]) -> np.ndarray:
        return torch.nn.functional.cosine_similarity(embed(texts), ref[None], dim=-1).float().cpu().numpy()

    def embedding(out: Any) -> torch.Tensor:
        hidden = out.last_hidden_state
        return pooled(hidden, torch.ones(hidden.shape[:2], device=hidden.device), pooling)[0]

    def cosine(out: Any) -> torch.Tensor:
        return torch.nn.functional.cosine_similarity(embedding(out), ref, dim=0)

    def linear(out: Any) -> torch.Tensor:
        # The same value with ‖e‖ held constant: linear in the pooled embedding, so relevance adds up to it.
        e = embedding(out)
        return e @ ref.to(e.dtype) / (e.norm().detach() * ref.norm().to(e.dtype))

    # At the text itself the full cosine to its own embedding is at its maximum (1) and its gradient is
    # zero; gradient methods then differentiate the linear form, whose gradient is r / (‖e‖ ‖r‖).
    grad_target = GradientTarget(linear if own else cosine, relevance=linear)
    weights: dict[str, np.ndarray] = {}

    def rows(hidden: torch.Tensor | None = None) -> np.ndarray:
        """The weights, computed once per example: from ``hidden`` (the text's last hidden states, e.g. from a
        batched forward, :func:`fill_row_weights`) or from a forward of the text alone."""
        if "w" not in weights:
            if hidden is None:
                hidden = _forward(model, _encode(tokenizer, [text], model)).last_hidden_state[0]
            weights["w"] = row_weights(hidden, ref)
        return weights["w"]

    return Target(
        task="similarity",
        kind="self",
        positions=["mean" if pooling == "mean" else "first"],  # the rows the pooling reads
        gradient_targets=[grad_target],
        output_names=None,
        text=text,
        fn=fn,
        label="similarity to its own embedding" if own else f"similarity to {reference!r}",
        meta={"reference": reference, "own_embedding": own},
        row_weights=rows if pooling == "mean" else None,
    )


def _generate(model: Any, inputs: dict[str, torch.Tensor], max_new_tokens: int, tokenizer: Any) -> torch.Tensor:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)[0].cpu()


def _token_names(tokenizer: Any, ids: Any) -> list[str]:
    return [tokenizer.decode([int(i)]) for i in ids]


def _continuation(
    model: Any,
    tokenizer: Any,
    prompt: Prompt,
    *,
    task: str,
    max_new_tokens: int,
    given: list[int] | None = None,
    contrast: str | None = None,
    contrast_token: Any = None,
    token_id: int | None = None,
) -> Target:
    """Each token of a continuation, explained by its log-probability (minus the contrast token's).

    The continuation is generated greedily (``max_new_tokens``; a generation that ends at EOS sooner
    explains what it generated and says so in ``meta``) or given (``given``: forced decoding). One
    teacher-forced forward over prompt and continuation reads every step: for a causal LM the rows of
    the last prompt token and of each generated token but the last; for an encoder-decoder the decoder
    rows from its start token on. The explained keys are the prompt (source) and the earlier generated
    tokens (an encoder-decoder's decoder inputs follow its source tokens). ``task="next_token"`` is the
    one-step form (a chat prompt's next token): one output, ``token_id`` or the most probable.
    """
    seq2seq = task == "seq2seq" or bool(getattr(model.config, "is_encoder_decoder", False))
    device = _device(model)
    ids = prompt.ids[None].to(device)
    source = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    start = decoder_start(model) if seq2seq else None
    stopped = False
    if given is not None:
        new = torch.tensor(given, dtype=torch.long)
    elif task == "next_token":
        head = _with_decoder_start(model, source) if seq2seq else source
        logits = _forward(model, head).logits[0, -1]
        tid = int(logits.argmax()) if token_id is None else _check_class(token_id, logits.shape[-1])
        new = torch.tensor([tid])
    else:
        out = _generate(model, source, max_new_tokens, tokenizer)
        new = out[1:] if seq2seq else out[ids.shape[1] :]
        if new.numel() == 0:
            raise InputError("the model generated no tokens to explain")
        # generate() stops at the end-of-sequence token: fewer tokens than asked for.
        stopped = new.numel() < max_new_tokens
    new = new.cpu()  # generate() returns the model's device; the explained inputs are built on the CPU
    n = int(new.numel())
    vocab = int(model.get_output_embeddings().weight.shape[0])
    requested = len(given) if given is not None else max_new_tokens
    versus = contrast_ids(tokenizer, requested, seq2seq, vocab, contrast=contrast, contrast_token=contrast_token)
    if versus is not None:
        versus = versus[:n]  # a generation that stopped early: the contrast's first n tokens align with it
    p = int(prompt.ids.numel())
    if seq2seq:
        decoder = torch.cat([torch.tensor([start]), new[:-1]])
        inputs = {"input_ids": prompt.ids[None], "attention_mask": torch.ones(1, p, dtype=torch.long)}
        inputs["decoder_input_ids"] = decoder[None]
        rows = list(range(n))  # decoder row t predicts token t + 1
        keys = slice(None)
        special = list(prompt.special) + [True] + [False] * (n - 1)  # the decoder's start token is special
        names = _token_names(tokenizer, prompt.ids) + _token_names(tokenizer, decoder)
    else:
        # The last token is read by no explained row: the forward stops before it.
        full = torch.cat([prompt.ids, new[:-1]])
        inputs = {"input_ids": full[None], "attention_mask": torch.ones(1, full.numel(), dtype=torch.long)}
        rows = list(range(p - 1, p - 1 + n))  # row p predicts token p + 1
        keys = slice(None)
        special = list(prompt.special) + [False] * (n - 1)
        names = _token_names(tokenizer, full)
    c = versus if versus is not None else [None] * n
    targets = [TokenLogProb(r, int(t), contrast=ci) for r, t, ci in zip(rows, new, c)]
    shown = _token_names(tokenizer, new)
    against = _token_names(tokenizer, versus) if versus is not None else None
    meta: dict[str, Any] = {
        "generated_ids": new.tolist(),
        "generated_tokens": shown,
        "prompt_length": p,
        "explained": "log-probability of each generated token",
        "forced": given is not None,
        "requested_tokens": requested,
        "stopped_early": stopped,
    }
    if stopped:
        meta["stopped_reason"] = (
            f"the generation ended at the end-of-sequence token after {n} of the {requested} tokens asked for; "
            f"the explanation covers the {n} generated"
        )
    if versus is not None:
        meta.update(contrast_ids=list(versus), contrast_tokens=against)
        meta["explained"] = "log p(token) − log p(contrast token) at each generated token"
    if prompt.chat:
        meta["chat_template_tokens"] = int(sum(prompt.special))
    if seq2seq:
        meta["source_length"] = p
        del meta["prompt_length"]
    output_names = shown if against is None else [f"{a} (vs {b})" for a, b in zip(shown, against)]
    spec = Target(
        task=task,
        kind="cross" if seq2seq else "self",
        positions=rows,
        gradient_targets=targets,
        output_names=output_names,
        inputs=inputs,
        keys=keys,
        meta=meta,
        text=prompt.text,
        feature_names=names,
        special=special,
    )
    if task == "next_token":
        what = "first generated token" if seq2seq else "next token"
        spec.output_names = None
        spec.label = f"log p({what} {shown[0]!r})" + (f" − log p({against[0]!r})" if against else "")
        spec.meta.update(token_id=int(new[0]), token=shown[0])
    return spec


# ---------------------------------------------------------------------------- the next token
def decoder_start(model: Any) -> int:
    """The token an encoder-decoder's decoder starts from (its config's decoder_start_token_id)."""
    config = model.config
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
    if start is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} names no decoder_start_token_id: set model.config.decoder_start_token_id"
        )
    return int(start)


class TokenLogProb(GradientTarget):
    """log p(token) at one row of a language model's logits (minus log p(contrast) when given), with its
    form linear in the logits.

    log p_t = z_t − Σ_k p_k z_k − H(p) for every z (the log-partition is Σ_k p_k z_k + H(p)); with p and H
    held constant the right side is linear in the logits (so in the last hidden states of a linear head),
    has the same value and the same gradient e_t − p: relevance methods and gradients explain one value,
    the entropy term a constant no token gets. A contrast needs no such step: log p_t − log p_c = z_t − z_c
    exactly (the log-partition cancels), linear in the logits as it is.
    """

    def __init__(self, row: int, token: int, contrast: int | None = None):
        self.row, self.token, self.contrast = row, token, contrast
        super().__init__(self.log_prob, relevance=self.linear)

    def log_prob(self, output: Any) -> torch.Tensor:
        """log p(token) (− log p(contrast)) at the row: the explained value, for gradients and shap."""
        logp = torch.log_softmax(output.logits[0, self.row], dim=-1)
        return logp[self.token] if self.contrast is None else logp[self.token] - logp[self.contrast]

    def linear(self, output: Any) -> torch.Tensor:
        """The same value, linear in the logits (p and H held constant): relevance methods start here."""
        z = output.logits[0, self.row]
        if self.contrast is not None:
            return z[self.token] - z[self.contrast]
        logp = torch.log_softmax(z.detach(), dim=-1)
        p = logp.exp()
        entropy = -(p * logp).sum()
        return z[self.token] - (p * z).sum() - entropy


def _last_rows(mask: torch.Tensor) -> torch.Tensor:
    """The index of each row's last real token, whichever side the padding is on."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask.long()).argmax(1)


def _next_token(
    model: Any,
    tokenizer: Any,
    text: str,
    target: int | None,
    contrast_token: Any = None,
    cache: dict[Any, Any] | None = None,
) -> Target:
    """The log-probability of the most probable next token (or token id ``target``): after the text for a
    causal LM, the first generated token for an encoder-decoder (read through cross attention); with
    ``contrast_token``, minus that token's log-probability."""
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    enc = _encode(tokenizer, [text], model)
    if seq2seq:
        enc = _with_decoder_start(model, enc)
        row = 0
    else:
        row = int(enc["input_ids"].shape[1]) - 1
    logits = _logits(model, enc, cache, "next_token", text, row)
    tid = int(logits.argmax()) if target is None else _check_class(target, logits.shape[-1])
    shown = tokenizer.decode([tid])
    cid = None if contrast_token is None else contrast_token_id(tokenizer, contrast_token, int(logits.shape[-1]))

    def fn(texts: Sequence[str]) -> np.ndarray:
        # Masked variants keep the token count, but a batch may be padded on either side.
        out = _next_token_rows(model, tokenizer, texts)
        logp = torch.log_softmax(out.float(), dim=-1)
        return (logp[:, tid] - (logp[:, cid] if cid is not None else 0.0)).cpu().numpy()

    what = "first generated token" if seq2seq else "next token"
    meta = {"token_id": tid, "token": shown, "explained": f"log-probability of the {what}"}
    label = f"log p({what} {shown!r})"
    if cid is not None:
        against = tokenizer.decode([cid])
        meta.update(contrast_ids=[cid], contrast_tokens=[against], explained=f"{meta['explained']} − the contrast's")
        label += f" − log p({against!r})"
    return Target(
        task="next_token",
        kind="cross" if seq2seq else "self",
        positions=[row],
        gradient_targets=[TokenLogProb(row, tid, contrast=cid)],
        output_names=None,
        text=text,
        inputs={k: v.cpu() for k, v in enc.items()} if seq2seq else None,
        fn=fn,
        label=label,
        meta=meta,
    )


# ---------------------------------------------------------------------------- inputs that are not text
def resolve_inputs(
    model: Any, inputs: Any, task: str | None = None, target: int | None = None, max_new_tokens: int | None = None
) -> Target:
    """The :class:`Target` of one example given as model inputs that are not text (``pixel_values``,
    ``input_features``): what :func:`detect_task` finds for the model, over its patches or frames.

    An image classifier explains its predicted class (or ``target``); a bare vision encoder the cosine
    similarity of its [CLS] embedding (the last layer's first row, which ViT's pooler and classifier read) to
    the unmasked image's; a speech encoder-decoder the log-probability of its first generated token (or
    token id ``target``) over the encoder's frames (cross attention).
    """
    main = getattr(model, "main_input_name", "input_ids")
    if not isinstance(inputs, dict) or main not in inputs or not isinstance(inputs[main], torch.Tensor):
        raise InputError(f"inputs= must be a dict holding the model's {main!r} tensor")
    if main == "input_ids":
        raise InputError(f"{type(model).__name__} reads text: pass the text, not inputs=")
    if inputs[main].shape[0] != 1:
        raise InputError(f"inputs= holds {inputs[main].shape[0]} examples; explain one at a time")
    if max_new_tokens is not None:
        raise InputError("explaining generated tokens from inputs= is not supported; leave max_new_tokens unset")
    task = task or detect_task(model)
    device = _device(model)
    given = {k: v.to(device) for k, v in inputs.items() if k != "decoder_input_ids"}
    if task == "classification":
        logits = _forward(model, given).logits[0]
        cls = int(logits.argmax()) if target is None else _check_class(target, logits.shape[-1])
        spec = Target(
            task="classification",
            kind="self",
            positions=["first"],
            gradient_targets=[lambda out: out.logits[0, cls]],
            output_names=None,
            inputs=given,
            label=_label(model, cls),
            meta={"class": cls},
        )
    elif task == "similarity":
        spec = _cls_similarity(model, given)
    elif task == "next_token" and getattr(model.config, "is_encoder_decoder", False):
        given = _with_decoder_start(model, given)
        logits = _forward(model, given).logits[0, 0]
        tid = int(logits.argmax()) if target is None else _check_class(target, logits.shape[-1])
        spec = Target(
            task="next_token",
            kind="cross",
            positions=[0],
            gradient_targets=[TokenLogProb(0, tid)],
            output_names=None,
            inputs=given,
            label=f"log p(first generated token {tid})",
            meta={"token_id": tid, "explained": "log-probability of the first generated token"},
        )
    else:
        raise InputError(
            f"task {task!r} is not explained from inputs=; inputs that are not text explain classification, "
            "similarity (a bare encoder) or the first generated token (an encoder-decoder)"
        )
    spec.inputs = {k: v.cpu() for k, v in spec.inputs.items()}
    spec.feature_names, spec.special = _feature_names(model, spec)
    return spec


def _cls_similarity(model: Any, inputs: dict[str, torch.Tensor]) -> Target:
    """A bare vision encoder's [CLS] embedding compared with the unmasked image's (linear form, ‖e‖ held)."""
    ref = _forward(model, inputs).last_hidden_state[0, 0]

    def linear(out: Any) -> torch.Tensor:
        e = out.last_hidden_state[0, 0]
        return e @ ref.to(e.dtype) / (e.norm().detach() * ref.norm().to(e.dtype))

    return Target(
        task="similarity",
        kind="self",
        positions=["first"],
        gradient_targets=[GradientTarget(linear)],
        output_names=None,
        inputs=inputs,
        label="similarity of the [CLS] embedding to its own",
        meta={"reference": None, "own_embedding": True},
    )


def _feature_names(model: Any, spec: Target) -> tuple[list[str] | None, list[bool] | None]:
    """Names of the explained keys: a ViT's [CLS] and patches (row, column), or a speech encoder's positions."""
    config = model.config
    if "pixel_values" in spec.inputs and spec.kind == "self":
        side = int(config.image_size) // int(config.patch_size)
        names = ["[CLS]"] + [f"patch ({r}, {c})" for r in range(side) for c in range(side)]
        return names, [True] + [False] * (side * side)
    if "input_features" in spec.inputs:
        # The convolution stem halves the frames: encoder position i reads input frames 2i and 2i + 1.
        frames = int(spec.inputs["input_features"].shape[-1])
        n = (frames + 1) // 2
        return [f"frames {2 * i}-{min(2 * i + 1, frames - 1)}" for i in range(n)], [False] * n
    return None, None


def target_kind(model: Any, task: str | None = None, reference: str | None = None, max_new_tokens: Any = None) -> str:
    """The attention kind the target of ``model`` (and ``task``) reads: ``cross`` for an encoder-decoder's
    generated tokens, else ``self`` (also when no task can be detected: explaining will say why)."""
    try:
        task = task or detect_task(model, reference, max_new_tokens)
    except UnsupportedModelError:
        return "self"
    seq2seq = getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    return "cross" if task == "seq2seq" or (task == "next_token" and seq2seq) else "self"
