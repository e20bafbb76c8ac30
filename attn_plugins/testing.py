"""Tiny offline models and tokenizers for tests, examples and benchmarks (fixed seeds, no hub access)."""

from __future__ import annotations

import string
from typing import Any

import torch

_WORDS = (
    "the a an and or but not no is are was were be been it this that these those i you he she we they "
    "me him her us them my your his its our their good bad great terrible movie film book story plot "
    "actor acting music love hate like liked boring fun funny sad happy very really quite so too much "
    "more most less all some any one two three first last new old big small long short time day night "
    "man woman people world life work place house home city country water food cat dog bird tree car "
    "road hello goodbye yes please thank thanks what who where when why how which of in on at to from "
    "with by for about over under between after before during while because if then than as do does did "
    "have has had can could will would should may might must go went gone come came see saw say said "
    "paris france berlin germany capital translate summary question answer text word sentence"
).split()

SPECIALS = {
    "bert": {"unk": "[UNK]", "pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "gpt": {"unk": "<unk>", "pad": "<pad>", "bos": "<s>", "eos": "</s>"},
    "seq2seq": {"unk": "<unk>", "pad": "<pad>", "bos": "<s>", "eos": "</s>"},
}


def tiny_vocab(style: str = "bert") -> list[str]:
    """The vocabulary of :func:`tiny_tokenizer`: special tokens, letters, word pieces, common words."""
    specials = list(dict.fromkeys(SPECIALS[style].values()))
    letters = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    return specials + letters + pieces + list(dict.fromkeys(_WORDS))


def tiny_tokenizer(style: str = "bert", model_max_length: int | None = None) -> Any:
    """A fast WordPiece tokenizer built offline with ``tokenizers``.

    ``style`` chooses the special tokens: ``"bert"`` wraps texts as ``[CLS] … [SEP]``, ``"gpt"`` adds
    nothing (decoder-only), ``"seq2seq"`` appends ``</s>`` (T5/BART-like sources and targets).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    sp = SPECIALS[style]
    vocab = {tok: i for i, tok in enumerate(tiny_vocab(style))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token=sp["unk"], max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    if style == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
    elif style == "seq2seq":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
        )
    kwargs = {f"{k}_token": v for k, v in sp.items()}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    if model_max_length is not None:
        fast.model_max_length = model_max_length
    if style == "gpt":
        fast.padding_side = "left"
    return fast


_QK_NAMES = ("query", "key", "q_proj", "k_proj", ".q.", ".k.", "q_lin", "k_lin", "c_attn", "query_key_value", "Wqkv")


def peaked_(model: torch.nn.Module, scale: float = 4.0) -> torch.nn.Module:
    """Scale query and key projection weights in place so random-init attention is far from uniform.

    Nearly uniform attention hides mask and scaling bugs; this makes every test sensitive to them.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 and any(k in name for k in _QK_NAMES):
                param.mul_(scale)
    return model


def tiny_bert(
    num_labels: int | None = None, seed: int = 0, layers: int = 2, heads: int = 4, hidden: int = 32
) -> torch.nn.Module:
    """A tiny random-init BERT (a classifier when ``num_labels`` is given), in eval mode."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tiny_vocab("bert")),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
        initializer_range=0.3,
        pad_token_id=1,
    )
    if num_labels is not None:
        config.num_labels = num_labels
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config)
    return model.eval()
