"""lxt 2.1's AttnLRP on tiny random-init models of every family lxt has rules for; writes the reference file.

Run with the Python of a SEPARATE virtual environment holding lxt (never this project's)::

    python3 -m venv /tmp/lxt-venv && /tmp/lxt-venv/bin/pip install --upgrade pip
    /tmp/lxt-venv/bin/pip install torch==2.13.0
    /tmp/lxt-venv/bin/pip install -c .ci/constraints.txt transformers safetensors numpy
    /tmp/lxt-venv/bin/pip install --no-deps lxt==2.1
    /tmp/lxt-venv/bin/python scripts/compare_lxt.py

Each family's model is built here from the zoo's config (:func:`build`, also used by
tests/methods/test_lxt_zoo.py to rebuild the same weights), saved with ``save_pretrained`` and loaded back,
patched with lxt's rules in a subprocess of its own (lxt patches classes globally), and explained in float64:
the logit of token 3 at the last position (decoders) or a fixed projection of the mean last hidden state
(BERT, ViT). Relevance is lxt's readout, input × gradient at ``inputs_embeds`` summed over the hidden
dimension (ViT: at the patch embeddings' output). Writes benchmarks/results/lxt_attnlrp_zoo.npz
(``rel_<family>``, ``f_<family>``, ``fingerprint_<family>``) and lxt_attnlrp_zoo.json (versions, how each
family was patched, and lxt's own patch error where it fails on this transformers).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "lxt_attnlrp_zoo"
FAMILIES = ("llama", "qwen2", "qwen3", "gemma3", "gpt2", "bert", "vit")
LENGTH = 7
TOKEN = 3  # the explained logit of the decoders
# Families outside the zoo: tiny configs of their own (the zoo's sizes).
_OWN = {
    "gemma3": (
        "gemma3_text",
        dict(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            intermediate_size=64,
            max_position_embeddings=64,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
            query_pre_attn_scalar=8,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            tie_word_embeddings=False,
        ),
    ),
}


def _zoo() -> Any:
    """attn_plugins.zoo, loaded from its file (lxt's environment does not install this project)."""
    try:
        from attn_plugins import zoo
    except ImportError:
        spec = importlib.util.spec_from_file_location("_ap_zoo", ROOT / "attn_plugins" / "zoo.py")
        zoo = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(zoo)
    return zoo


def build(family: str) -> torch.nn.Module:
    """The family's tiny model in float64, seeded, with peaked attention and random biases (zero biases hide sinks)."""
    zoo = _zoo()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family in _OWN:
            from transformers import AutoConfig, AutoModelForCausalLM

            model_type, overrides = _OWN[family]
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **overrides))
            zoo._peak_zoo(model, 15.0)
            model.eval()
        else:
            model = zoo.tiny_model(family)
    model = model.double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    return model


def fingerprint(model: torch.nn.Module) -> float:
    """Σ |w| · (1 + index) over the parameters: equal fingerprints, (almost surely) equal weights."""
    return float(sum(p.detach().abs().sum() * (i + 1) for i, p in enumerate(model.parameters())))


def inputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """One example: 7 token ids (the zoo's tiny_inputs), or one image."""
    out = _zoo().tiny_inputs(model, batch=1, length=LENGTH)
    return {k: v.double() if v.is_floating_point() else v for k, v in out.items()}


def is_decoder(model: torch.nn.Module) -> bool:
    return hasattr(model, "lm_head")


def target(model: torch.nn.Module) -> Any:
    """The explained scalar: a logit at the last position, or a fixed projection of the mean last hidden state."""
    if is_decoder(model):
        return lambda out: out.logits[0, -1, TOKEN]
    r = torch.linspace(-1, 1, model.config.hidden_size, dtype=torch.float64)
    return lambda out: out.last_hidden_state[0].mean(0) @ r


# ------------------------------------------------------------------ lxt's side (its own environment)
_LXT_EFFICIENT = None


def _import_lxt_rules() -> Any:
    """lxt.efficient's rule modules without its package __init__ (which imports lxt's BERT copy; see the JSON)."""
    import lxt

    base = Path(lxt.__file__).parent / "efficient"
    for name, path in (("lxt.efficient", base), ("lxt.efficient.models", base / "models")):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
    import lxt.efficient.patches as patches

    return patches


def _own_patches(family: str) -> str:
    """lxt's rule functions applied where lxt's model maps apply them, its attention wrapper on the eager
    attention function only (lxt's patch_attention swaps ALL_ATTENTION_FUNCTIONS for a plain dict, which
    transformers 5 calls .get_interface on)."""
    import importlib

    patches = _import_lxt_rules()

    module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    module.eager_attention_forward = patches.wrap_attention_forward(module.eager_attention_forward)
    how = "eager_attention_forward wrapped with lxt.efficient.patches.wrap_attention_forward"
    if family in ("llama", "qwen2", "qwen3", "gemma3", "gpt2"):
        lxt_map = importlib.import_module(f"lxt.efficient.models.{family}").attnLRP
        for cls, patch in lxt_map.items():
            if isinstance(cls, type):
                patch(cls)
        return how + f"; the other rows of lxt.efficient.models.{family}.attnLRP"
    # BERT and HF ViT: the rules of lxt's BERT copy (LayerNorm, dropout, identity rule on the activations).
    patches.patch_method(patches.layer_norm_forward, torch.nn.LayerNorm)
    patches.patch_method(patches.dropout_forward, torch.nn.Dropout)

    # lxt's non_linear_forward (its torchvision-ViT row for GELU): the identity rule on the activation classes.
    for cls in (type(model_act(family)), torch.nn.Tanh):
        patches.patch_method(patches.non_linear_forward, cls, keep_original=True)
    return how + "; layer_norm_forward, dropout_forward, non_linear_forward on the activation classes (GELU, tanh)"


def model_act(family: str) -> Any:
    """The intermediate activation module of a BERT or ViT config."""
    from transformers.activations import ACT2FN

    return ACT2FN[build_config(family).hidden_act]


def build_config(family: str) -> Any:
    from transformers import AutoConfig

    zoo = _zoo()
    return AutoConfig.for_model(family, **zoo.ZOO[family][1])


def _native_attempt(family: str) -> str:
    """What lxt's own monkey_patch does on this transformers: 'ok' or the error text."""
    try:
        import lxt.efficient  # noqa: F401
    except Exception as e:  # recorded, then the rules are loaded without the package __init__
        first = f"import lxt.efficient: {type(e).__name__}: {e}".replace(str(Path(sys.prefix)), "<venv>")
    else:
        first = ""
    if family == "vit":
        return (first + "; " if first else "") + "lxt's ViT rules patch torchvision's VisionTransformer, not HF ViT"
    try:
        import importlib

        _import_lxt_rules()
        lxt_mod = importlib.import_module(f"lxt.efficient.models.{family}")
        for cls, patch in lxt_mod.attnLRP.items():  # what lxt.efficient.core.monkey_patch does with the map
            patch(cls)
        model = _load(build(family))
        _explain(model)
    except Exception as e:
        return (first + "; " if first else "") + f"{type(e).__name__}: {e}".replace(str(Path(sys.prefix)), "<venv>")
    return "ok"


def _load(model: torch.nn.Module) -> torch.nn.Module:
    """Save and load back (eager attention: lxt wraps the eager function)."""
    from transformers import AutoModel, AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        auto = AutoModelForCausalLM if is_decoder(model) else AutoModel
        loaded = auto.from_pretrained(tmp, attn_implementation="eager", dtype=torch.float64)
    return loaded.eval()


def _explain(model: torch.nn.Module) -> tuple[torch.Tensor, float]:
    """lxt's readout: input × gradient at inputs_embeds (ViT: at the patch embeddings), summed over features."""
    x = inputs(model)
    leaves: list[torch.Tensor] = []
    if "pixel_values" in x:

        def leaf(module: Any, args: tuple, out: torch.Tensor) -> torch.Tensor:
            t = out.detach().requires_grad_()
            leaves.append(t)
            return t

        handle = model.get_input_embeddings().register_forward_hook(leaf)
        out = model(**x)
        handle.remove()
    else:
        emb = model.get_input_embeddings()(x.pop("input_ids")).detach().requires_grad_()
        leaves.append(emb)
        out = model(inputs_embeds=emb, **x)
    f = target(model)(out)
    f.backward()
    rel = (leaves[0] * leaves[0].grad).sum(-1)[0].detach()
    return rel, float(f.detach())


def _child(family: str, path: str) -> None:
    """Patch with lxt's rules (lxt's functions, placed as lxt's maps place them) and explain."""
    model = build(family)  # built before patching: the patches change forwards, never weights
    how = _own_patches(family)
    model = _load(model)
    rel, f = _explain(model)
    torch.save({"rel": rel, "f": f, "fingerprint": fingerprint(model), "how": how}, path)


def _native_child(family: str, path: str) -> None:
    """lxt's own monkey patching of this family (a process of its own: it leaves the classes patched)."""
    native = _native_attempt(family)
    rel, f = None, None
    if native == "ok":
        rel, f = _explain(_load(build(family)))
    torch.save({"native": native, "rel": rel, "f": f}, path)


def main() -> None:
    import numpy as np

    arrays: dict[str, Any] = {}
    meta: dict[str, Any] = {"families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            path, native = f"{tmp}/{family}.pt", f"{tmp}/{family}.native.pt"
            subprocess.run([sys.executable, __file__, "--native", family, native], check=True)
            subprocess.run([sys.executable, __file__, "--family", family, path], check=True)
            r, n = torch.load(path), torch.load(native)
            r["native"] = n["native"]
            if n["native"] == "ok":  # lxt's own patching works here: its numbers are the reference
                r.update(rel=n["rel"], f=n["f"], how="lxt's own attnLRP map (as lxt.efficient.monkey_patch applies it)")
            arrays[f"rel_{family}"] = r["rel"].numpy()
            arrays[f"f_{family}"] = np.array(r["f"])
            arrays[f"fingerprint_{family}"] = np.array(r["fingerprint"])
            meta["families"][family] = {"how": r["how"], "lxt_monkey_patch": r["native"], "f": r["f"]}
            print(family, f"f={r['f']:.6g}", r["native"][:100])
    from importlib.metadata import version

    meta["versions"] = {p: version(p) for p in ("lxt", "torch", "transformers", "numpy")}
    meta["python"] = sys.version.split()[0]
    np.savez(OUT.with_suffix(".npz"), **arrays)
    OUT.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--family":
        _child(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "--native":
        _native_child(sys.argv[2], sys.argv[3])
    else:
        main()
