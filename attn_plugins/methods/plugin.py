"""The built-in methods' plugin module, loaded through the ``attn_plugins`` entry point like any other."""

from __future__ import annotations

from ..plugins.hookspecs import Register, hookimpl
from .alti import Alti
from .base import Method
from .decompx import DecompX
from .flow import Flow
from .gae import GAE
from .gradients import GradAttention
from .lrp import LRP
from .norm import NormBased
from .raw import RawAttention
from .rollout import Rollout
from .value_zeroing import ValueZeroing

BUILTIN_METHODS = (RawAttention, Rollout, Flow, GradAttention, GAE, NormBased, Alti, ValueZeroing)


def relevance_methods() -> list[Method]:
    """The methods that propagate the explained output back to the tokens (one instance each)."""
    return [
        LRP("attnlrp", rule="attnlrp", description="AttnLRP (Achtibat et al. 2024): LRP rules through attention"),
        LRP("cplrp", rule="cplrp", description="CP-LRP (Ali et al. 2022): LRP with attention weights held constant"),
        LRP(
            "cplrp_mask",
            rule="cplrp",
            baseline="mask",
            description="CP-LRP relevance of the change from the masked text to the text, read at the midpoint",
        ),
        DecompX("decompx", bias="absdot"),
    ]


@hookimpl
def attn_plugins_register_methods(register: Register) -> None:
    """Register raw, rollout, flow, grad_attention, gae, norm, alti, value_zeroing, attnlrp, cplrp, cplrp_mask, decompx."""
    for cls in BUILTIN_METHODS:
        register(cls.name, cls())
    for method in relevance_methods():
        register(method.name, method)
