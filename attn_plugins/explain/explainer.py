"""Explainers that speak shap: attention-method scores returned as a ``shap.Explanation``.

The explanation has the structure of shap's own text explanations: one row per text, values over the
text's tokens, the token strings as data, and for multi-output targets (QA start/end, generated tokens)
a second axis with the output names — shap's text-to-text form for generation, so ``shap.plots.text``
shows its input/output view. Special tokens ([CLS], [SEP], ...) are left out unless
``special_tokens=True``: shap never masks them (their Shapley value is 0), while attention methods give
them large scores (rows attend to them), which would dominate every plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import shap
import torch

from ..capture.oom import split_on_oom, split_scope
from ..errors import InputError
from ..methods import get_method
from ..methods.base import Method
from ..record import AttentionRecord
from .defaults import Choice, choose, default_rows
from .generation import is_chat
from .targets import (
    Target,
    describe_example,
    detect_task,
    fill_row_weights,
    fit_text,
    predict_logits,
    resolve,
    resolve_inputs,
    target_kind,
    unwrap,
)

GENERATING = {"generation", "seq2seq"}
# What the explanation's ``generation`` entry keeps of a target's meta.
GENERATION_KEYS = (
    "generated_tokens",
    "generated_ids",
    "contrast_tokens",
    "contrast_ids",
    "explained",
    "forced",
    "requested_tokens",
    "stopped_early",
    "stopped_reason",
    "prompt_length",
    "source_length",
    "chat_template_tokens",
)


def generation_info(spec: Target) -> dict[str, Any]:
    """What one generation target explained (tokens, contrast, early stop), for the explanation and the report."""
    return {k: spec.meta[k] for k in GENERATION_KEYS if k in spec.meta}


def as_batch(texts: Any) -> list[Any]:
    """One example (a string, a QA pair, or chat messages) becomes a batch of one."""
    if isinstance(texts, str) or (
        isinstance(texts, tuple) and len(texts) == 2 and all(isinstance(t, str) for t in texts)
    ):
        return [texts]
    if is_chat(texts):
        return [texts]
    out = list(texts)
    if not out:
        raise InputError("the batch of texts is empty")
    return out


def ragged(rows: list[np.ndarray]) -> np.ndarray:
    """Stack equal-shaped rows into one array, else an object array of rows (shap's form for ragged text)."""
    if len({r.shape for r in rows}) == 1:
        return np.stack(rows)
    out = np.empty(len(rows), dtype=object)
    for i, r in enumerate(rows):  # element-wise so NumPy does not try to broadcast the rows
        out[i] = r
    return out


def _first_token_inputs(spec: Target) -> bool:
    """Whether ``spec``'s inputs are what encoding its text gives an encoder-decoder explained at its first
    generated token (the text, and the decoder start token alone): a padded batch of texts encodes the same."""
    inputs = spec.inputs
    if spec.task != "next_token" or not isinstance(inputs, dict) or "decoder_input_ids" not in inputs:
        return False
    text_keys = {"input_ids", "attention_mask", "token_type_ids", "decoder_input_ids"}
    return set(inputs) <= text_keys and tuple(inputs["decoder_input_ids"].shape) == (1, 1)


def _with_meta(record: AttentionRecord, spec: Target) -> AttentionRecord:
    """``record`` with what the target knows of its text (prompt length, truncation) in its meta."""
    record.meta.update({k: v for k, v in spec.meta.items() if k in ("prompt_length", "truncated", "original_tokens")})
    return record


def feature_explanation(values: Any, names: Sequence[str]) -> shap.Explanation:
    """A one-dimensional ``shap.Explanation`` of one value per named feature (``shap.plots.bar`` draws it)."""
    return shap.Explanation(values=np.asarray(values, dtype=float), base_values=0.0, feature_names=list(names))


def _reads_text(model: Any) -> bool:
    """Whether ``model`` reads token ids (its ``main_input_name``), not pixels or audio features."""
    return getattr(model, "main_input_name", "input_ids") in ("input_ids", None)


class _CallableMethod(Method):
    """The capture side of the method contract for a plain callable: what its ``requires`` names."""

    def __init__(self, fn: Any) -> None:
        self.requires = tuple(getattr(fn, "requires", ()))
        self.name = getattr(fn, "name", type(fn).__name__)


class AttentionExplainer:
    """``AttentionExplainer(model, tokenizer, method=None)(texts)`` -> ``shap.Explanation``.

    ``method=None`` picks the most faithful method that supports the model (:mod:`~attn_plugins.explain.defaults`:
    the faithfulness benchmark's ranking, first method whose ``check_support`` accepts the model and the
    target's attention kind); ``self.choice`` and the explanation's ``method_choice`` say which was used and
    why each more faithful one was refused.

    ``task`` is detected from the model's head unless given; ``target`` picks a class (for a language
    model, the token id whose log-probability is explained), ``token`` the explained token of a token
    classifier, ``reference`` the text a sentence embedding is compared to (a
    base encoder without a head and without ``reference`` explains its own embedding: the cosine
    similarity of the embedding with tokens masked to the text's unmasked embedding), without ``max_new_tokens`` a language
    model explains its next token (an encoder-decoder its first generated token), with it each of that many
    generated tokens. Generated tokens (``max_new_tokens``, or a given continuation ``target="..."``,
    forced decoding) are explained by their log-probabilities over the prompt (source) and the tokens
    generated before each (an encoder-decoder's decoder inputs follow its source tokens; a relevance method
    reads them from its own backward, an attention method from the decoder's self attention), one column
    per generated token; a relevance method explains every step from one forward. ``contrast_token`` (one
    token) or ``contrast`` (a continuation compared token by token) explain log p(token) − log p(contrast)
    instead (methods that read attention only are refused: they do not depend on the explained output). A
    prompt given as chat messages is rendered with the tokenizer's chat template, its template tokens
    marked special. The explanation's ``generation`` lists, per example, the generated and contrast
    tokens and whether the generation stopped before ``max_new_tokens`` (at its end-of-sequence token).
    With ``cplrp_mask`` an encoder-decoder's decoder tokens get their relevance at the midpoint forward
    (the mask baseline replaces source tokens only). ``position`` overrides the query row of single-output tasks (e.g.
    ``"mean"`` for a classifier, or row weights). ``special_tokens=True`` keeps [CLS], [SEP], ... in the
    explanation. A text longer than the model accepts (or ``max_length``) is an InputError naming it,
    unless ``truncation=True``: then its longest prefix that fits is explained and the record's
    ``meta['truncated']`` is True. Texts are captured ``batch_size`` at a time, in one padded forward each
    (records cut to each text's tokens, so the scores are those of one text alone); a method that explains
    a gradient target (relevance, gradients) does so for texts with one explained output each, with one
    backward of the sum of their targets (:class:`~attn_plugins.adapters.BatchTarget`). A batch that runs out of
    device memory is split in halves and retried (the explanation's ``batch_splits`` counts them, one
    :class:`~attn_plugins.capture.oom.BatchSplitWarning` per call); a text that does not fit alone is a
    :class:`~attn_plugins.errors.DeviceMemoryError` naming it. Other keyword
    options go to the method. Models that read no text (ViT's
    ``pixel_values``, Whisper's ``input_features``) are explained from ``explainer(inputs={...})``, one
    example at a time (:func:`~attn_plugins.explain.targets.resolve_inputs`): patches or encoder frames.

    Query rows of a mean-pooled similarity: the pooling reads every row of the last layer, so by default
    each method's rows are read as the method declares (:attr:`Method.pooled_rows`): weighted by their
    share of the similarity, w_i = h_i · ∂f/∂h_i (:func:`~attn_plugins.explain.targets.row_weights`, one
    forward per text), unless measurement says otherwise; on exact Shapley values (docs/faithfulness.md)
    the weighted rows beat the mean row for every attention method but the signed ``grad_attention``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        method: str | Method | None = None,
        *,
        task: str | None = None,
        target: int | str | None = None,
        token: int | None = None,
        reference: str | None = None,
        max_new_tokens: int | None = None,
        contrast: str | None = None,
        contrast_token: Any = None,
        position: Any = None,
        special_tokens: bool = False,
        truncation: bool = False,
        max_length: int | None = None,
        batch_size: int = 32,
        **method_options: Any,
    ):
        self.model, self.tokenizer, self.pooling = unwrap(model, tokenizer, text=_reads_text(model))
        self.choice: Choice | None = None
        if method is None:
            # A given continuation or a contrast continuation explains generated tokens, as max_new_tokens does.
            wants = (
                max_new_tokens if max_new_tokens is not None else (1 if isinstance(target, str) or contrast else None)
            )
            kind = target_kind(self.model, task, reference, wants)
            self.choice = choose(self.model, self.tokenizer, kind)
            method = self.choice.method
        self.method = get_method(method)
        self.method_name = getattr(self.method, "name", str(method))
        self.task = task
        self.target = target
        self.token = token
        self.reference = reference
        self.max_new_tokens = max_new_tokens
        self.contrast = contrast
        self.contrast_token = contrast_token
        self.position = position
        self.special_tokens = bool(special_tokens)
        self.truncation = bool(truncation)
        self.max_length = max_length
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.method_options = method_options
        if (contrast is not None or contrast_token is not None) and not self.per_output():
            # An attention-only method does not depend on the explained output: with a contrast it would
            # show the same scores as without, as if they explained the difference.
            raise InputError(
                f"method {self.method_name!r} reads attention only, which does not depend on the explained "
                "output: a contrast would change nothing; use a relevance or gradient method (e.g. 'cplrp', "
                "'grad_attention') or the default (method=None)"
            )
        self._targets_cache: dict[Any, Any] = {}  # e.g. the reference embedding, computed once per explainer
        self.forward_passes = 0  # model forwards spent on captures (for cost reports)

    # ------------------------------------------------------------------ per example
    def resolve_all(self, examples: Sequence[Any], names: Sequence[str | None] | None = None) -> list[Target]:
        """:meth:`resolve` of each example (errors name it ``names[i]``, by default ``text i``); the classes or
        next tokens that plain texts explain are predicted in one padded forward per ``batch_size`` texts, not
        one forward each."""
        examples = list(examples)
        if names is None:
            names = [describe_example(e, i + 1 if len(examples) > 1 else None) for i, e in enumerate(examples)]
        # One example is resolved as it is; the task is only looked up for several.
        task = (
            (self.task or detect_task(self.model, self.reference, self.max_new_tokens)) if len(examples) > 1 else None
        )
        predicted = (
            task in ("classification", "next_token")
            and self.max_new_tokens is None
            and self.contrast is None
            and not isinstance(self.target, str)
            and getattr(self.model, "main_input_name", "input_ids") == "input_ids"
            and getattr(self.tokenizer, "pad_token", None) is not None
        )
        if predicted:
            texts = []
            for e in examples:
                if not isinstance(e, str) or not e.strip():
                    continue  # pairs, chat messages and empty texts are resolved (or refused) one by one
                try:
                    texts.append(
                        fit_text(self.model, self.tokenizer, e, truncation=self.truncation, max_length=self.max_length)[
                            0
                        ]
                    )
                except InputError:
                    continue  # resolve() names the text in its error
            try:
                predict_logits(self.model, self.tokenizer, texts, task, self._targets_cache, self.batch_size)
            except torch.OutOfMemoryError:
                pass  # the texts not predicted yet are resolved one by one: each retried, or named (resolve)
        try:
            return [self.resolve(e, name) for e, name in zip(examples, names)]
        finally:
            # Logits of texts an error left unresolved are not kept.
            for key in [k for k in self._targets_cache if isinstance(k, tuple) and k[:1] == ("logits",)]:
                self._targets_cache.pop(key, None)

    def resolve(self, example: Any, name: str | None = None) -> Target:
        """The explained outputs of one example; ``name`` is how errors call it (e.g. ``text 2``).

        Finding the explained output may run the model (the predicted class): an example that does not fit
        in the device's memory is a :class:`~attn_plugins.errors.DeviceMemoryError` naming it."""
        (spec,) = split_on_oom(
            lambda _: [self._resolve(example, name)], [example], lambda e: self.describe(e, None, name)
        )
        return spec

    def _resolve(self, example: Any, name: str | None) -> Target:
        spec = resolve(
            self.model,
            self.tokenizer,
            example,
            task=self.task,
            target=self.target,
            token=self.token,
            reference=self.reference,
            max_new_tokens=self.max_new_tokens,
            pooling=self.pooling,
            cache=self._targets_cache,
            truncation=self.truncation,
            max_length=self.max_length,
            name=name,
            contrast=self.contrast,
            contrast_token=self.contrast_token,
        )
        if self.position is not None:
            if spec.output_names is not None:
                raise InputError(f"position= applies to single-output tasks, not to {spec.task!r}")
            spec.positions = [self.position]
        return spec

    def _method(self) -> Method:
        # A plain callable plugin (not a Method) gets the base class's capture of what it `requires`.
        return self.method if isinstance(self.method, Method) else _CallableMethod(self.method)

    def _capture(self, spec: Target, gradient_target: Any = None) -> AttentionRecord:
        """A record the method can read: the method captures it (see :meth:`Method.capture`)."""
        method = self._method()
        if spec.inputs is not None:
            record = method.capture(self.model, self.tokenizer, inputs=spec.inputs, gradient_target=gradient_target)
        else:
            record = method.capture(self.model, self.tokenizer, spec.text, gradient_target=gradient_target)
        self.forward_passes += int(record.meta.get("forward_passes", method.forward_passes))
        return _with_meta(record, spec)

    def per_output(self) -> bool:
        """Whether the method captures once per explained output (a gradient or a relevance belongs to one)."""
        method = self._method()
        return "gradients" in tuple(method.requires) or method.explains_target

    def batchable(self, spec: Target) -> bool:
        """Whether ``spec`` can share a padded forward with others: a plain text read without gradients."""
        return (
            self._method().batch_capture
            and not self.per_output()
            and (spec.inputs is None or _first_token_inputs(spec))
            and isinstance(spec.text, str)
        )

    def target_batchable(self, spec: Target) -> bool:
        """Whether ``spec`` can share one padded forward and one backward with others: a plain text with one
        explained output, a method whose capture takes a list with a batch target (the sum of the texts'
        targets), a model that reads text alone (no decoder inputs) and a tokenizer that can pad."""
        method = self._method()
        return (
            self.per_output()
            and bool(getattr(method, "batch_targets", False))
            and (method.explains_target or method.batch_capture)
            and (spec.inputs is None or _first_token_inputs(spec))
            and isinstance(spec.text, str)
            and len(spec.gradient_targets) == 1
            and getattr(self.tokenizer, "pad_token", None) is not None
        )

    def _capture_targets(self, specs: Sequence[Target]) -> list[AttentionRecord]:
        """One capture of many texts explaining each its own target: the gradient of the sum of the targets."""
        from ..adapters import BatchTarget
        from ..capture.encoding import encode

        texts = [spec.text for spec in specs]
        # The texts' token counts as the capture will pad them: a target pooling rows reads its text's only.
        lengths = [len(info.tokens) for info in encode(self.model, self.tokenizer, texts).source]
        target = BatchTarget([spec.gradient_targets[0] for spec in specs], lengths)
        method = self._method()
        records = method.capture(self.model, self.tokenizer, texts, gradient_target=target)
        for record, spec in zip(records, specs):
            self.forward_passes += int(record.meta.get("forward_passes", method.forward_passes))
            _with_meta(record, spec)
        return records

    def scores_batch(self, specs: Sequence[Target]) -> list[tuple[np.ndarray, AttentionRecord]]:
        """:meth:`scores` of many examples; those :meth:`batchable` share one padded capture per ``batch_size``
        texts, and those :meth:`target_batchable` one padded forward and one backward per ``batch_size`` texts.

        A batch that runs out of device memory is split in halves and retried, down to one text
        (:func:`~attn_plugins.capture.oom.split_on_oom`); a text that does not fit alone is a
        :class:`~attn_plugins.errors.DeviceMemoryError` naming it."""
        out: list[tuple[np.ndarray, AttentionRecord] | None] = [None] * len(specs)

        def describe(i: int) -> str:
            return self.describe(
                specs[i].text,
                specs[i].inputs,
                describe_example(specs[i].text, i + 1 if len(specs) > 1 else None)
                if specs[i].text is not None
                else None,
            )

        def batches(indices: list[int], run: Any) -> None:
            # Texts of similar length share a batch: less padding computed and thrown away.
            indices.sort(key=lambda i: len(specs[i].text))
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for i, result in zip(chunk, split_on_oom(run, chunk, describe)):
                    out[i] = result

        with split_scope():
            explained = [i for i, spec in enumerate(specs) if self.target_batchable(spec)]
            if len(explained) > 1:
                batches(explained, lambda chunk: self._target_batch([specs[i] for i in chunk]))
            together = [i for i, spec in enumerate(specs) if self.batchable(spec)]
            if len(together) > 1:
                batches(together, lambda chunk: self._shared_batch([specs[i] for i in chunk]))
            for i in [i for i, o in enumerate(out) if o is None]:
                (out[i],) = split_on_oom(lambda chunk: [self.scores(specs[chunk[0]])], [i], describe)
        return out  # type: ignore[return-value]

    def _target_batch(self, chunk: Sequence[Target]) -> list[tuple[np.ndarray, AttentionRecord]]:
        """Scores of texts explained together: one padded forward and one backward of the sum of their targets."""
        if len(chunk) < 2:
            return [self.scores(chunk[0])]  # a text alone (a batch split down to one)
        fill_row_weights(self.model, self.tokenizer, [s for s in chunk if self.pooled_rows(s) == "weighted"])
        out = []
        for spec, record in zip(chunk, self._capture_targets(chunk)):
            (position,) = self.positions(spec)
            out.append((self._values([self._row(record, position, spec)], spec), record))
        return out

    def _shared_batch(self, chunk: Sequence[Target]) -> list[tuple[np.ndarray, AttentionRecord]]:
        """Scores of texts captured together in one padded forward (the method reads no gradient)."""
        method = self._method()
        records = method.capture(self.model, self.tokenizer, [spec.text for spec in chunk])
        # Row weights of pooled targets: one padded forward for the chunk, as its capture.
        fill_row_weights(self.model, self.tokenizer, [s for s in chunk if self.pooled_rows(s) == "weighted"])
        out = []
        for spec, record in zip(chunk, records):
            record = _with_meta(record, spec)
            self.forward_passes += int(record.meta.get("forward_passes", method.forward_passes))
            out.append((self._values(self._rows(record, spec, self.positions(spec)), spec), record))
        return out

    def describe(self, text: Any, inputs: dict[str, Any] | None = None, name: str | None = None) -> str:
        """How an error names an example that does not fit in memory: ``text 2 ('the movie…', 57 tokens)``."""
        if inputs is not None:  # token ids, pixels or audio frames: their last axis
            first = next((v for v in inputs.values() if hasattr(v, "shape")), None)
            size = f"{int(first.shape[-1])} positions" if first is not None else "its inputs"
            return f"{name or 'the example'} ({size})"
        name = name or describe_example(text)
        try:
            pair = isinstance(text, tuple)  # a (question, context) pair is encoded as one input
            tokens = len((self.tokenizer(*text) if pair else self.tokenizer(text))["input_ids"])
        except Exception:  # chat messages, a tokenizer that cannot say: the message still names the text
            return name
        return f"{name[:-1]}, {tokens} tokens)" if name.endswith(")") else f"{name} ({tokens} tokens)"

    def pooled_rows(self, spec: Target) -> str | None:
        """How the method's rows are read for ``spec``'s pooled target (None: the spec's own positions)."""
        if self.position is not None or spec.row_weights is None or self._method().explains_target:
            return None
        return default_rows(self.method)

    def positions(self, spec: Target) -> list[Any]:
        """The query position of each explained output: the spec's, or the method's reading of pooled rows."""
        rows = self.pooled_rows(spec)
        if rows is None:
            return list(spec.positions)
        if rows == "weighted":
            self.forward_passes += 1  # the forward that gives the last hidden states
            return [np.asarray(spec.row_weights(), dtype=np.float64)]
        return [rows]

    def scores(self, spec: Target) -> tuple[np.ndarray, AttentionRecord]:
        """Method scores [keys] (one output) or [keys, outputs] and the (last) record they came from."""
        positions = self.positions(spec)
        columns = []
        method = self._method()
        if self.per_output() and getattr(method, "captures_many", False) and len(spec.gradient_targets) > 1:
            # One forward for every explained output (each generated token), one backward each.
            source = {"inputs": spec.inputs} if spec.inputs is not None else {"text": spec.text}
            records = method.capture(self.model, self.tokenizer, **source, gradient_targets=list(spec.gradient_targets))
            self.forward_passes += int(records[0].meta.get("forward_passes", method.forward_passes))
            for position, record in zip(positions, records):
                columns.append(self._row(_with_meta(record, spec), position, spec))
        elif self.per_output():
            for position, grad_target in zip(positions, spec.gradient_targets):
                record = self._capture(spec, grad_target)
                columns.append(self._row(record, position, spec))
        else:
            record = self._capture(spec)
            columns = self._rows(record, spec, positions)
        return self._values(columns, spec), record

    @staticmethod
    def _values(columns: list[np.ndarray], spec: Target) -> np.ndarray:
        values = np.stack(columns, -1)
        return values[:, 0] if spec.output_names is None else values

    def _row(self, record: AttentionRecord, position: Any, spec: Target) -> np.ndarray:
        out = np.asarray(self.method(record, position=position, kind=spec.kind, **self.method_options))
        if spec.task == "seq2seq":
            return np.concatenate([out[spec.keys], self._decoder_rows(record, [position], spec)[0]])
        return out[spec.keys]

    def _rows(self, record: AttentionRecord, spec: Target, positions: list[Any]) -> list[np.ndarray]:
        if all(isinstance(p, (int, np.integer)) for p in positions) and len(positions) > 1:
            # One call for all rows: flow solves max-flow problems per row asked for, not for all.
            out = np.asarray(self.method(record, position=list(positions), kind=spec.kind, **self.method_options))
            if spec.task == "seq2seq":
                decoder = self._decoder_rows(record, positions, spec)
                return [np.concatenate([row[spec.keys], d]) for row, d in zip(out, decoder)]
            return [row[spec.keys] for row in out]
        return [self._row(record, p, spec) for p in positions]

    def _decoder_rows(self, record: AttentionRecord, positions: list[Any], spec: Target) -> list[np.ndarray]:
        """Scores of an encoder-decoder's decoder inputs (the earlier generated tokens) for each decoder row.

        A relevance method reads them from its own backward (``decoder_scores``); an attention method reads
        the same row of the decoder's self attention; a method with neither is refused by name.
        """
        own = getattr(self.method, "decoder_scores", None)
        if callable(own):
            found = own(record)
            if found is None:
                raise InputError(f"method {self.method_name!r} gave no relevance of the decoder's tokens")
            return [np.asarray(found, dtype=np.float64)] * len(positions)
        kinds = tuple(getattr(self.method, "kinds", ("decoder",)))
        if "decoder" not in kinds or "decoder" not in record.attentions:
            raise InputError(
                f"method {self.method_name!r} cannot score the earlier generated tokens of an encoder-decoder "
                "(it reads no decoder self attention and has no decoder relevance)"
            )
        out = np.asarray(self.method(record, position=list(positions), kind="decoder", **self.method_options))
        return list(out.reshape(len(positions), -1))

    def kept(self, spec: Target, record: AttentionRecord) -> np.ndarray:
        """Which explained key tokens the explanation shows: all but the special tokens unless they are asked for
        (a chat prompt's template tokens are marked special too)."""
        tokens = record.tokens[spec.keys]
        special = record.special_tokens_mask
        if spec.task in ("generation", "seq2seq") and spec.special is not None:
            tokens, special = spec.special, spec.special  # prompt (source) and earlier generated tokens
        elif spec.special is not None and len(spec.special) == len(record.tokens):
            special = spec.special  # a target without text names its own ([CLS] of a ViT)
        if self.special_tokens or special is None:
            return np.ones(len(tokens), dtype=bool)
        keep = ~np.asarray(special[spec.keys], dtype=bool)
        # A text of special tokens only keeps them (an explanation needs at least one token).
        return keep if keep.any() else np.ones(len(tokens), dtype=bool)

    def data(self, spec: Target, record: AttentionRecord) -> np.ndarray:
        """Token strings as shap's Text masker cuts them (with trailing spaces), else the record's tokens."""
        n = len(record.tokens[spec.keys])
        if spec.task in ("generation", "seq2seq") and spec.feature_names is not None:
            names = np.array(spec.feature_names, dtype=object)
            prompt = int(spec.meta.get("prompt_length", spec.meta.get("source_length", 0)))
            if not spec.meta.get("chat_template_tokens") and getattr(self.tokenizer, "is_fast", False):
                # The prompt's tokens as shap's Text masker cuts its text (with trailing spaces).
                segments, _ = shap.maskers.Text(self.tokenizer).token_segments(spec.text)
                if len(segments) == prompt:
                    names[:prompt] = segments
            return names
        if spec.feature_names is not None and len(spec.feature_names) == len(record.tokens):
            return np.array(spec.feature_names, dtype=object)[spec.keys]
        if spec.text is not None and getattr(self.tokenizer, "is_fast", False):
            segments, _ = shap.maskers.Text(self.tokenizer).token_segments(spec.text)
            if len(segments) == n:
                return np.array(segments, dtype=object)
        return np.array(record.tokens[spec.keys], dtype=object)

    # ------------------------------------------------------------------ batch
    def __call__(self, texts: Any = None, *, inputs: dict[str, Any] | None = None) -> shap.Explanation:
        """Explain a text, a (question, context) pair, or a batch of them; or ``inputs`` of a model that reads
        no text (one example: ``{"pixel_values": ...}`` or ``{"input_features": ...}``)."""
        if (texts is None) == (inputs is None):
            raise InputError("pass texts or inputs= (for a model that reads pixels or audio), not both or neither")
        if inputs is not None:
            specs = [resolve_inputs(self.model, inputs, self.task, self.target, self.max_new_tokens)]
        else:
            examples = as_batch(texts)
            # Every example is resolved (and its length checked) before the first is explained.
            specs = self.resolve_all(examples)
        values, data, bases, names, labels, tasks = [], [], [], [], [], set()
        with split_scope() as splits:  # batches split for lack of device memory: one warning for the call
            results = self.scores_batch(specs)
        for spec, (v, record) in zip(specs, results):
            keep = self.kept(spec, record)
            values.append(v[keep])
            data.append(self.data(spec, record)[keep])
            # Attention scores are not a decomposition of the output, so nothing is claimed as a base value.
            bases.append(np.zeros(()) if spec.output_names is None else np.zeros(len(spec.output_names)))
            names.append(None if spec.output_names is None else np.array(spec.output_names))
            labels.append(spec.label)
            tasks.add(spec.task)
        if all(n is None for n in names):
            # One output: name it when every text explains the same one (shap's plots take a string here).
            output_names = labels[0] if len(set(labels)) == 1 and labels[0] is not None else None
        elif tasks & GENERATING:
            # shap's text-to-text form: each example names its own generated tokens; a 2-D array when they
            # have equal counts, because shap slices output names along the (then regular) output axis.
            output_names = np.stack(names) if len({len(n) for n in names}) == 1 else names
        else:
            output_names = list(names[0])  # fixed outputs (QA start and end) named once, as shap does
        explanation = shap.Explanation(
            values=ragged(values),
            base_values=ragged(bases) if bases[0].ndim else np.array([float(b) for b in bases]),
            data=ragged(data) if len({len(d) for d in data}) > 1 else np.stack(data),
            output_names=output_names,
            # shap names text features by their stripped token strings; its ragged mean(0) groups by them.
            feature_names=[[str(t).strip() for t in d] for d in data],
        )
        # Which method explained, and (for the default) why each more faithful one could not.
        explanation.method = self.method_name
        explanation.method_choice = self.choice.to_dict() if self.choice is not None else None
        explanation.method_note = self.choice.note() if self.choice is not None else None
        if explanation.method_note is None and callable(getattr(self.method, "method_note", None)):
            explanation.method_note = self.method.method_note()  # a learned attributor: its training and validation
        # Batches split for lack of device memory ({"batches_split": 0, ...} when none was).
        explanation.batch_splits = splits.to_dict()
        # Per example, what a generation explained: its tokens, the contrast, whether it stopped early.
        explanation.generation = [generation_info(s) for s in specs] if tasks & GENERATING else None
        return explanation

    def __repr__(self) -> str:
        return f"AttentionExplainer(method={self.method_name!r}, task={self.task!r})"


def explain(
    model: Any,
    tokenizer: Any = None,
    texts: str | Sequence[Any] | None = None,
    method: str | Method | None = None,
    *,
    inputs: dict[str, Any] | None = None,
    **options: Any,
) -> shap.Explanation:
    """Explain ``texts`` (or ``inputs=`` of a model that reads no text) with ``method`` as a ``shap.Explanation``.

    ``method=None``: the most faithful method that supports the model (see :class:`AttentionExplainer`).
    """
    return AttentionExplainer(model, tokenizer, method=method, **options)(texts, inputs=inputs)
