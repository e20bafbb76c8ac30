"""A batch that runs out of device memory is split in halves and retried; one text that never fits is an error.

The model's forward is made to raise ``torch.OutOfMemoryError`` (the class CUDA raises; it exists on CPU
builds too) when a batch holds more than ``k`` texts, or a text of ``width`` tokens or more: the split run
must give the scores of the unsplit one, spend the forwards the halving predicts, and say so once.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import attn_plugins as ap
from attn_plugins.adapters import BatchTarget
from attn_plugins.capture.oom import BatchSplitWarning
from attn_plugins.corpus import run_corpus
from attn_plugins.corpus.shards import load_results
from attn_plugins.errors import CorpusError, DeviceMemoryError
from attn_plugins.explain.explainer import AttentionExplainer
from attn_plugins.zoo import tiny_bert, tiny_tokenizer
from tests.helpers import noise
from tests.helpers.noise import capture_tolerance, explain_tolerance

# Different lengths, so the explainer sorts them and the halves are predictable: (5) -> (3) (2) -> (2) (1).
TEXTS = ["a dog", "hello world", "the cat sat on the mat", "i liked the music a lot", "the quick brown fox jumps"]
LONG = "the cat saw a dog in the house and the dog saw the cat in the garden of the house"
# One method per batched path: one forward and one backward (a relevance method, and a gradient method
# whose capture goes through ap.capture with a BatchTarget), and a shared padded forward without gradients.
METHODS = ["cplrp_mask", "grad_attention", "rollout"]


@pytest.fixture(scope="module")
def setup():
    return tiny_bert(num_labels=3), tiny_tokenizer("bert")


class OutOfMemory:
    """A forward pre-hook raising ``exc`` for a batch of more than ``k`` texts or one ``width`` tokens wide."""

    def __init__(
        self,
        model,
        k: int,
        width: int | None = None,
        exc: type[Exception] = torch.OutOfMemoryError,
        grad_only: bool = False,
        after: int = 0,
    ):
        # grad_only: the width limit holds for forwards that keep activations for a backward only (a
        # relevance method's), not for the no-grad forward that finds a text's predicted class.
        # after: the first `after` forwards never raise.
        self.k, self.width, self.exc, self.grad_only, self.after = k, width, exc, grad_only, after
        self.tries: list[int] = []  # batch size of every forward started
        self.failed: list[int] = []
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        batch, width = ids.shape[0], ids.shape[1]
        self.tries.append(batch)
        too_wide = self.width is not None and width >= self.width and (torch.is_grad_enabled() or not self.grad_only)
        if len(self.tries) > self.after and (batch > self.k or too_wide):
            self.failed.append(batch)
            raise self.exc("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.7 GiB total capacity)")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _split_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, BatchSplitWarning)]


@pytest.mark.parametrize("method", METHODS)
def test_a_split_batch_gives_the_scores_of_the_whole_batch(setup, method):
    model, tok = setup
    ap.explain(model, tok, TEXTS[:2], method=method)  # the adapter learns the model's layout once (a forward)
    with OutOfMemory(model, k=len(TEXTS)) as spy:  # never raises: counts the forwards of the unsplit run
        whole = ap.explain(model, tok, TEXTS, method=method, batch_size=8)
    # One padded forward finds the texts' targets, then f forwards (the method's) of the padded batch of five.
    f = spy.tries.count(5) - 1
    assert f >= 1 and spy.tries == [5] + [5] * f
    assert whole.batch_splits == {"batches_split": 0, "smallest_batch": None}
    with OutOfMemory(model, k=2) as spy, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = ap.explain(model, tok, TEXTS, method=method, batch_size=8)
    # The targets' padded forward fails: each text finds its own. Then the method's batch: (5) fails, its
    # first half (3) fails, then (2) and (1) fit, and the second half (2) fits.
    assert spy.tries == [5] + [1] * 5 + [5, 3] + [2] * f + [1] * f + [2] * f and spy.failed == [5, 5, 3]
    assert split.batch_splits == {"batches_split": 2, "smallest_batch": 1}
    (message,) = _split_warnings(caught)  # once for the call
    assert "2 batch(es) split" in message and "held 1 example" in message
    tol = explain_tolerance(model, tok, TEXTS, method=method)
    for i, (got, want) in enumerate(zip(split.values, whole.values)):
        np.testing.assert_allclose(np.asarray(got, float), np.asarray(want, float), rtol=0, atol=tol)
        alone = ap.explain(model, tok, TEXTS[i], method=method).values[0]  # and each text's own scores
        np.testing.assert_allclose(np.asarray(got, float), alone, rtol=0, atol=tol)
    assert [list(d) for d in split.data] == [list(d) for d in whole.data]


@pytest.mark.parametrize("method", ["cplrp_mask", "grad_attention"])
@pytest.mark.parametrize("grad_only", [False, True], ids=["finding-its-target", "explaining"])
def test_a_text_that_does_not_fit_alone_is_an_error_naming_it(setup, grad_only, method):
    model, tok = setup
    width = len(tok(LONG)["input_ids"])
    # First of the user's texts, last of the explainer's (sorted by length): the error uses the user's number.
    with OutOfMemory(model, k=8, width=width, grad_only=grad_only), pytest.raises(DeviceMemoryError) as err:
        ap.explain(model, tok, [LONG, *TEXTS], method=method)
    message = str(err.value)
    assert message.startswith(f"text 1 ('{LONG[:39]}…', {width} tokens) does not fit in the device's memory")
    assert "max_length" in message and "smaller model" in message and "CPU" in message
    assert isinstance(err.value.__cause__, torch.OutOfMemoryError)
    single = OutOfMemory(model, k=8, width=width, grad_only=grad_only)
    with single, pytest.raises(DeviceMemoryError, match=r"^the text \('the cat saw.*tokens\) does not fit"):
        ap.explain(model, tok, LONG, method=method)


@pytest.mark.parametrize("method", ["cplrp_mask", "rollout"])
def test_another_error_is_neither_retried_nor_hidden(setup, method):
    model, tok = setup
    # The targets' padded forward goes through; the method's batch then raises.
    with OutOfMemory(model, k=2, exc=RuntimeError, after=1) as spy, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="CUDA out of memory") as err:
            ap.explain(model, tok, TEXTS, method=method, batch_size=8)
    assert type(err.value) is RuntimeError
    assert spy.tries == [5, 5]  # the targets' forward, then the batch's, not tried again
    assert not _split_warnings(caught)


def test_capture_of_many_texts_splits_too(setup):
    model, tok = setup
    whole = ap.capture(model, tok, TEXTS)
    with OutOfMemory(model, k=2) as spy, pytest.warns(BatchSplitWarning, match="2 batch"):
        split = ap.capture(model, tok, TEXTS)
    # ap.capture keeps the caller's order: (5) -> (3) fails -> (2) (1), then (2).
    assert spy.tries == [5, 3, 2, 1, 2] and spy.failed == [5, 3]
    tol = capture_tolerance(model, tok, TEXTS)
    for a, b in zip(split, whole):
        assert a.tokens == b.tokens
        torch.testing.assert_close(a.attentions["self"], b.attentions["self"], rtol=0, atol=tol)


@pytest.mark.parametrize("per_text", [True, False], ids=["batch-target", "class-index"])
def test_capture_with_gradients_splits_each_texts_target_with_it(setup, per_text):
    model, tok = setup
    lengths = [len(info.tokens) for info in ap.capture.__globals__["encode"](model, tok, TEXTS).source]
    # Each text explains another class: a target cut from the wrong text would give another gradient.
    targets = [lambda out, c=i % 3: out.logits[0, c] for i in range(len(TEXTS))]
    target = (lambda: BatchTarget(targets, lengths)) if per_text else (lambda: 2)
    whole = ap.capture(model, tok, TEXTS, gradients=True, gradient_target=target())
    with OutOfMemory(model, k=2) as spy, pytest.warns(BatchSplitWarning):
        split = ap.capture(model, tok, TEXTS, gradients=True, gradient_target=target())
    assert spy.failed == [5, 3]
    # The gradients' own float32-vs-float64 gap (tests/helpers/noise.py's rule).
    double = ap.capture(
        copy.deepcopy(model).double(), tok, TEXTS, gradients=True, gradient_target=target(), dtype=torch.float64
    )
    gap = max(float((a.gradients["self"].double() - b.gradients["self"]).abs().max()) for a, b in zip(whole, double))
    tol = max(noise.FACTOR * gap, noise.FLOOR)
    for a, b in zip(split, whole):
        torch.testing.assert_close(a.gradients["self"], b.gradients["self"], rtol=0, atol=tol)


def test_a_corpus_run_keeps_every_text_but_the_one_that_does_not_fit(setup, tmp_path: Path):
    model, tok = setup
    texts = [*TEXTS, LONG]
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    width = len(tok(LONG)["input_ids"])
    with OutOfMemory(model, k=2, width=width, grad_only=True), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CorpusError) as err:
            run_corpus(model, tok, src, tmp_path / "out", method="cplrp_mask", save_records=False, progress=False)
    (failure,) = err.value.failures
    assert failure["id"] == "t5" and "does not fit in the device's memory even alone" in failure["error"]
    assert f"{width} tokens" in failure["error"]
    # (6) -> (3) short ones -> (2) (1); (3) with the long text -> (2), then the long text alone fails.
    assert err.value.summary["batches_split"] == 3 and err.value.summary["smallest_batch"] == 1
    assert len(_split_warnings(caught)) == 1  # once for the run
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["last_run"]["batches_split"] == 3
    rows = {r["id"]: r for r in load_results(tmp_path / "out")}
    assert sorted(rows) == [f"t{i}" for i in range(5)]
    explainer = AttentionExplainer(model, tok, method="cplrp_mask")
    alone = explainer.scores_batch([explainer.resolve(t) for t in TEXTS])
    tol = explain_tolerance(model, tok, TEXTS, method="cplrp_mask")
    for i, (values, _) in enumerate(alone):
        np.testing.assert_allclose(np.asarray(rows[f"t{i}"]["scores"], float), values, rtol=0, atol=tol)
