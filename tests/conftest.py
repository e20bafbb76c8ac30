"""Shared fixtures: tiny random-init models and tokenizers built offline from config classes (fixed seeds).

Tests are grouped in folders that mirror the package (record/, plugins/, adapters/, capture/, methods/,
explain/, metrics/, views/, corpus/, bench/); README, docs, CLI and example tests sit at the top.
Helpers shared by several test modules live in ``helpers/``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from helpers.ray_cluster import ENV as RAY_ENV

from attn_plugins.zoo import peaked_, tiny_bert, tiny_tokenizer

# Ray reads these once, when it is imported: set before any test imports it (see helpers/ray_cluster.py).
for _key, _value in RAY_ENV.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bert():
    """A two-class tiny BERT classifier (sdpa) with peaked attention, so mask and scale bugs show."""
    return peaked_(tiny_bert(num_labels=2))


@pytest.fixture(scope="module")
def tok():
    """The tiny WordPiece tokenizer the zoo's BERT-style models share."""
    return tiny_tokenizer("bert")


@pytest.fixture
def quiet():
    """Silence library warnings (transformers' deprecations) inside one test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="session")
def classifier():
    """A tiny 2-layer BERT classifier (2 labels, 64 positions, random init): the bad-input tests' model."""
    return tiny_bert(num_labels=2)


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, classifier) -> Path:
    """The tiny classifier and its tokenizer saved as a local model directory, for the command line."""
    path = tmp_path_factory.mktemp("tiny-classifier")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier.save_pretrained(path)
        tiny_tokenizer("bert").save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def saved_record(tmp_path_factory, classifier) -> Path:
    """A valid record of the tiny classifier, saved with ap.save."""
    import attn_plugins as ap

    path = tmp_path_factory.mktemp("record") / "rec.attn"
    ap.save(ap.capture(classifier, tiny_tokenizer("bert"), "the movie was great"), path)
    return path


@pytest.fixture(scope="module")
def bad_plugin():
    """The misbehaving plugin of helpers/bad_plugin.py, registered for one test module, then forgotten."""
    from helpers import bad_plugin as plugin

    import attn_plugins as ap

    ap.register_plugin(plugin, name=plugin.PLUGIN_NAME)
    yield plugin
    ap.reload_plugins()
