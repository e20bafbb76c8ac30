"""The adapter layer: the contract every capture adapter follows, and the batch plumbing they share.

No model code lives here: the built-in adapters are the package ``attn_adapters`` (the folder
``adapters/`` of the source tree), and third-party adapters are plugins. Both depend on this contract;
the core never imports an adapter.
"""

from .batch import check_selection, library_versions, model_device, move_inputs, split_batch
from .contract import (
    ATTENTION_RULES,
    Adapter,
    AttentionCall,
    BatchTarget,
    CaptureOptions,
    EncodedBatch,
    TokenInfo,
    rule_operands,
    rule_output,
    rule_softcap,
    scale_gradient,
    target_scalar,
)

__all__ = [
    "ATTENTION_RULES",
    "Adapter",
    "AttentionCall",
    "BatchTarget",
    "CaptureOptions",
    "EncodedBatch",
    "TokenInfo",
    "check_selection",
    "library_versions",
    "model_device",
    "move_inputs",
    "rule_operands",
    "rule_output",
    "rule_softcap",
    "scale_gradient",
    "split_batch",
    "target_scalar",
]
