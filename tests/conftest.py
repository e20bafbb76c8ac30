"""Shared fixtures: tiny random-init models and tokenizers built offline from config classes (fixed seeds).

Tests are grouped in folders that mirror the package (record/, plugins/, adapters/, capture/, methods/,
explain/, metrics/, views/, corpus/, bench/); README, docs, CLI and example tests sit at the top.
Helpers shared by several test modules live in ``helpers/``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from attn_plugins.zoo import peaked_, tiny_bert, tiny_tokenizer

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
