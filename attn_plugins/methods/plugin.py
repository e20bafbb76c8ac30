"""The built-in methods' plugin module, loaded through the ``attn_plugins`` entry point like any other."""

from __future__ import annotations

from ..plugins.hookspecs import Register, hookimpl
from .alti import Alti
from .flow import Flow
from .gae import GAE
from .gradients import GradAttention
from .norm import NormBased
from .raw import RawAttention
from .rollout import Rollout

BUILTIN_METHODS = (RawAttention, Rollout, Flow, GradAttention, GAE, NormBased, Alti)


@hookimpl
def attn_plugins_register_methods(register: Register) -> None:
    """Register raw, rollout, flow, grad_attention, gae, norm and alti."""
    for cls in BUILTIN_METHODS:
        register(cls.name, cls())
