"""The tiny-model zoo: small random-init models of each architecture, built offline from config classes.

A public module, for tests (this package's and plugins'), examples and benchmarks: nothing here downloads
anything. ``tiny_tokenizer(style)`` builds a WordPiece/BPE-like tokenizer with ``tokenizers``;
``tiny_model(model_type)`` a model of any type in :func:`zoo_types` (fixed seed, optionally with peaked
attention so mask and scale bugs show, see :func:`peaked_`); :func:`verify_capture` checks a capture of one
type against eager ``output_attentions=True`` (``scripts/write_architectures.py`` writes docs/architectures.md
from it).
"""

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


# ---------------------------------------------------------------------------- a zoo of tiny architectures
# Small sizes shared by every zoo model: 2 layers, 4 heads of 8 dims, a 128-token vocabulary.
_V, _D, _H, _L, _F, _P = 128, 32, 4, 2, 64, 64
_ENCODER = dict(
    vocab_size=_V,
    hidden_size=_D,
    num_hidden_layers=_L,
    num_attention_heads=_H,
    intermediate_size=_F,
    max_position_embeddings=_P,
    pad_token_id=0,
)
_DECODER = dict(_ENCODER, num_key_value_heads=2, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
_SEQ2SEQ = dict(
    vocab_size=_V,
    d_model=_D,
    encoder_layers=_L,
    decoder_layers=_L,
    encoder_attention_heads=_H,
    decoder_attention_heads=_H,
    encoder_ffn_dim=_F,
    decoder_ffn_dim=_F,
    max_position_embeddings=_P,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=1,
    forced_eos_token_id=None,
)

# model_type -> (family, config overrides). Families: "encoder" (AutoModel over token ids), "decoder"
# (AutoModelForCausalLM), "seq2seq" (AutoModelForSeq2SeqLM), "vision" (pixel_values), "speech" (input_features).
ZOO: dict[str, tuple[str, dict[str, Any]]] = {
    "bert": ("encoder", _ENCODER),
    "roberta": ("encoder", dict(_ENCODER, pad_token_id=1)),
    "xlm-roberta": ("encoder", dict(_ENCODER, pad_token_id=1)),
    "electra": ("encoder", dict(_ENCODER, embedding_size=_D)),
    "distilbert": ("encoder", dict(vocab_size=_V, dim=_D, n_layers=_L, n_heads=_H, hidden_dim=_F, pad_token_id=0)),
    "albert": ("encoder", dict(_ENCODER, embedding_size=16, num_hidden_layers=3)),
    "deberta-v2": (
        "encoder",
        dict(_ENCODER, relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=16),
    ),
    "mpnet": ("encoder", dict(_ENCODER, pad_token_id=1)),
    # Three layers with a 4-token local window: layers 1 and 2 are ModernBERT's sliding-window layers.
    "modernbert": (
        "encoder",
        dict(
            _ENCODER,
            num_hidden_layers=3,
            local_attention=4,
            global_attn_every_n_layers=3,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
        ),
    ),
    "gpt2": (
        "decoder",
        dict(vocab_size=_V, n_embd=_D, n_layer=_L, n_head=_H, n_positions=_P, bos_token_id=1, eos_token_id=2),
    ),
    "gpt_neox": ("decoder", dict(_DECODER, num_key_value_heads=None, rotary_pct=0.5)),
    "gptj": (
        "decoder",
        dict(
            vocab_size=_V,
            n_embd=_D,
            n_layer=_L,
            n_head=_H,
            n_positions=_P,
            rotary_dim=4,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    "llama": ("decoder", _DECODER),
    "mistral": ("decoder", dict(_DECODER, sliding_window=4)),
    "mixtral": ("decoder", dict(_DECODER, sliding_window=None, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2": ("decoder", _DECODER),
    "qwen3": ("decoder", dict(_DECODER, head_dim=8)),
    "gemma": ("decoder", dict(_DECODER, head_dim=8)),
    # Gemma-2 alternates sliding-window (4 tokens) and global layers and soft-caps its attention logits.
    "gemma2": (
        "decoder",
        dict(_DECODER, head_dim=8, query_pre_attn_scalar=8, sliding_window=4, attn_logit_softcapping=2.0),
    ),
    "phi": ("decoder", dict(_DECODER, num_key_value_heads=None)),
    "phi3": ("decoder", _DECODER),
    "opt": (
        "decoder",
        dict(
            vocab_size=_V,
            hidden_size=_D,
            num_hidden_layers=_L,
            num_attention_heads=_H,
            ffn_dim=_F,
            word_embed_proj_dim=_D,
            max_position_embeddings=_P,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    "falcon": (
        "decoder",
        dict(
            vocab_size=_V, hidden_size=_D, num_hidden_layers=_L, num_attention_heads=_H, bos_token_id=1, eos_token_id=2
        ),
    ),
    "bloom": (
        "decoder",
        dict(vocab_size=_V, hidden_size=_D, n_layer=_L, n_head=_H, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    ),
    # gpt-oss adds a learned attention sink per head (passed to the attention function as s_aux).
    "gpt_oss": (
        "decoder",
        dict(
            _DECODER,
            head_dim=8,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
    ),
    "t5": (
        "seq2seq",
        dict(
            vocab_size=_V,
            d_model=_D,
            d_kv=8,
            d_ff=_F,
            num_layers=_L,
            num_decoder_layers=_L,
            num_heads=_H,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=0,
        ),
    ),
    "bart": ("seq2seq", _SEQ2SEQ),
    "marian": ("seq2seq", dict(_SEQ2SEQ, decoder_start_token_id=0, decoder_vocab_size=_V)),
    "mbart": ("seq2seq", _SEQ2SEQ),
    "pegasus": ("seq2seq", _SEQ2SEQ),
    "vit": (
        "vision",
        dict(
            hidden_size=_D,
            num_hidden_layers=_L,
            num_attention_heads=_H,
            intermediate_size=_F,
            image_size=16,
            patch_size=4,
        ),
    ),
    "whisper": (
        "speech",
        dict(
            _SEQ2SEQ,
            num_mel_bins=8,
            max_source_positions=8,
            max_target_positions=_P,
            decoder_start_token_id=1,
            suppress_tokens=None,
            begin_suppress_tokens=None,
        ),
    ),
}


def zoo_types() -> list[str]:
    """The model types :func:`tiny_model` can build."""
    return list(ZOO)


def tiny_model(
    model_type: str,
    seed: int = 0,
    attn_implementation: str | None = None,
    peaked: float | None = 15.0,
    **config_overrides: Any,
) -> torch.nn.Module:
    """A tiny random-init model of ``model_type`` (see :data:`ZOO`), in eval mode, with peaked attention.

    ``peaked`` scales the query/key projections (random init at std 0.02 gives nearly uniform attention,
    which hides mask and scaling bugs); 15 makes the average row maximum about 0.4 to 0.9.

    The head is the natural one for the family: a bare encoder, a causal LM, a seq2seq LM. The default
    attention backend is the one transformers picks (sdpa where supported) unless one is given;
    ``config_overrides`` change the config (e.g. ``vocab_size=len(tiny_vocab("gpt"))`` to pair the model
    with :func:`tiny_tokenizer`).
    """
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSpeechSeq2Seq,
    )

    if model_type not in ZOO:
        raise KeyError(f"no tiny config for {model_type!r}; known: {', '.join(ZOO)}")
    family, overrides = ZOO[model_type]
    config = AutoConfig.for_model(model_type, **{**overrides, **config_overrides})
    torch.manual_seed(seed)
    auto = {"decoder": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM, "speech": AutoModelForSpeechSeq2Seq}
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = auto.get(family, AutoModel).from_config(config, **kwargs)
    if peaked:
        # T5 does not divide its logits by sqrt(head_dim): a scale of 4 already gives rows near one-hot.
        _peak_zoo(model, min(peaked, 4.0) if model_type == "t5" else peaked)
    return model.eval()


def _peak_zoo(model: torch.nn.Module, scale: float) -> None:
    """Like :func:`peaked_`, also for fused ``qkv_proj`` (Phi-3) and query/key norms (Qwen3, OLMo-2).

    Norms after the projections undo any weight scaling, so their gains are scaled instead.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            fused = param.dim() == 2 and "qkv_proj" in name
            norm = param.dim() == 1 and any(k in name for k in ("q_norm", "k_norm"))
            if norm:
                # Normalized queries and keys already give logits of order sqrt(head_dim); a gentler gain
                # keeps rows peaked but not one-hot (one-hot rows would hide errors too).
                param.mul_(scale**0.25)
            elif fused or (param.dim() == 2 and any(k in name for k in _QK_NAMES)):
                param.mul_(scale)


def tiny_inputs(model: torch.nn.Module, batch: int = 2, length: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random model inputs for a zoo model; the second example is padded (left for causal LMs, else right)."""
    family = ZOO.get(model.config.model_type, ("encoder", {}))[0]
    g = torch.Generator().manual_seed(seed)
    if family == "vision":
        size = model.config.image_size
        return {"pixel_values": torch.randn(batch, model.config.num_channels, size, size, generator=g)}
    inputs: dict[str, torch.Tensor] = {}
    if family == "speech":
        frames = 2 * model.config.max_source_positions
        inputs["input_features"] = torch.randn(batch, model.config.num_mel_bins, frames, generator=g)
    else:
        # Ids start above the special ids so no random token is a pad, bos or eos token.
        inputs["input_ids"] = torch.randint(4, model.config.vocab_size, (batch, length), generator=g)
        mask = torch.ones(batch, length, dtype=torch.long)
        if batch > 1:
            if family == "decoder":
                mask[1, :3] = 0
            else:
                mask[1, -3:] = 0
        inputs["attention_mask"] = mask
    if family in ("seq2seq", "speech"):
        start = model.config.decoder_start_token_id
        dec = torch.randint(4, model.config.vocab_size, (batch, length - 3), generator=g)
        dec[:, 0] = start
        inputs["decoder_input_ids"] = dec
    return inputs


def _reference_attentions(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], **config_overrides: Any
) -> dict[str, torch.Tensor]:
    """Eager ``output_attentions=True`` of a fresh eager copy of ``model``: {kind: [B, L, H, Q, K]}."""
    family = ZOO[model.config.model_type][0]
    reference = tiny_model(model.config.model_type, attn_implementation="eager", peaked=None, **config_overrides)
    param = next(model.parameters())
    reference = reference.to(device=param.device, dtype=param.dtype)  # the same device and dtype as the model
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = reference(**inputs, output_attentions=True, return_dict=True)
    if family in ("seq2seq", "speech"):
        raw = {"encoder": out.encoder_attentions, "decoder": out.decoder_attentions, "cross": out.cross_attentions}
    else:
        raw = {"self": out.attentions}
    return {kind: torch.stack(list(t), dim=1) for kind, t in raw.items()}


def deep_overrides(model_type: str, layers: int) -> dict[str, int]:
    """Config overrides giving a zoo model ``layers`` layers (on each side of an encoder-decoder)."""
    family = ZOO[model_type][0]
    if model_type == "t5":
        return {"num_layers": layers, "num_decoder_layers": layers}
    if family in ("seq2seq", "speech"):
        return {"encoder_layers": layers, "decoder_layers": layers}
    return {"num_hidden_layers": layers}


def verify_capture(
    model_type: str,
    adapter: str = "huggingface",
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    **config_overrides: Any,
) -> dict[str, Any]:
    """Capture a tiny ``model_type`` model and compare it with eager attention and an uncaptured forward.

    Returns the figures of ``docs/architectures.md``: adapter and backend used, kinds, the largest
    absolute difference of the captured weights from eager ``output_attentions=True`` (over real tokens
    of a padded batch), and of the model output from a forward without capture. ``config_overrides``
    change the model (e.g. :func:`deep_overrides` for more layers than module names sort correctly);
    ``device`` and ``dtype`` place the model and the eager reference (differences are read in float32).
    """
    from attn_plugins.adapters import CaptureOptions
    from attn_plugins.capture import encode_inputs, select_adapter
    from attn_plugins.errors import AttnPluginsError

    model = tiny_model(model_type, **config_overrides).to(device=device, dtype=dtype)
    inputs = _placed(tiny_inputs(model), device, dtype)
    with torch.no_grad():
        plain = model(**inputs, return_dict=True)
    chosen = select_adapter(model, adapter)
    with torch.no_grad():
        output, records = chosen.run(model, encode_inputs(model, inputs), CaptureOptions())
    reference = _reference_attentions(model, inputs, **config_overrides)
    src_mask = inputs.get("attention_mask")
    att_diff = 0.0
    for b, record in enumerate(records):
        record.validate()
        keep_src = None if src_mask is None else src_mask[b].bool()
        for kind, ref in reference.items():
            r = ref[b]
            if keep_src is not None and kind in ("self", "encoder"):
                r = r[:, :, keep_src][:, :, :, keep_src]
            if keep_src is not None and kind == "cross":
                r = r[:, :, :, keep_src]
            captured = record.attentions[kind]  # with learned sinks: the exact rows, which sum to less than 1
            att_diff = max(att_diff, (captured.float().cpu() - r.float().cpu()).abs().max().item())
    key = "logits" if getattr(plain, "logits", None) is not None else "last_hidden_state"
    a, b_ = getattr(plain, key), getattr(output, key)
    if src_mask is not None and a.dim() == 3 and a.shape[1] == src_mask.shape[1]:
        # Outputs at padding positions are undefined (backends differ there); compare real tokens only.
        a, b_ = a[src_mask.bool()], b_[src_mask.bool()]
    # Whether the per-head value norms (Kobayashi et al. 2020) can be captured: needs the output projection.
    try:
        with torch.no_grad():
            one = _placed(tiny_inputs(model, batch=1), device, dtype)
            chosen.capture(model, encode_inputs(model, one), CaptureOptions(value_norms=True))
        value_norms = True
    except AttnPluginsError:
        value_norms = False
    meta = records[0].meta
    return {
        "value_norms": value_norms,
        "model_type": model_type,
        "model_class": type(model).__name__,
        "adapter": meta["adapter"],
        "backend": meta["attention_backend"],
        "kinds": records[0].kinds,
        "layers": records[0].num_layers,
        "fallback": meta.get("fallback"),
        # How far from uniform the tested attention is (mean of row maxima): near-uniform rows hide bugs.
        "mean_row_max": float(records[0].attentions[records[0].default_kind].max(-1).values.mean()),
        "max_attention_diff": att_diff,
        "max_output_diff": (a.float().cpu() - b_.float().cpu()).abs().max().item(),
        "device": str(torch.device(device)),
        "dtype": str(dtype).removeprefix("torch."),
    }


def _placed(inputs: dict[str, torch.Tensor], device: torch.device | str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Inputs on ``device``; floating ones (pixels, audio features) in ``dtype``, ids kept as they are."""
    return {k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
