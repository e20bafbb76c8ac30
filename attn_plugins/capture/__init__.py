"""The capture layer: text in, records out, through whichever adapter reads the model.

* :func:`capture` - one forward, one :class:`~attn_plugins.record.AttentionRecord` per example;
* :func:`capture_generate` - a KV-cached generation as one record;
* :func:`stream` with the reducers - summaries of long inputs, one layer in memory at a time.
"""

from .encoding import encode, encode_inputs, model_max_length
from .forward import capture, check_model_device, select_adapter
from .generate import capture_generate
from .streaming import HeadEntropy, HeadReduce, Reducer, RolloutReducer, StreamResult, TopK, TopKResult, stream

__all__ = [
    "HeadEntropy",
    "HeadReduce",
    "Reducer",
    "RolloutReducer",
    "StreamResult",
    "TopK",
    "TopKResult",
    "capture",
    "capture_generate",
    "check_model_device",
    "encode",
    "encode_inputs",
    "model_max_length",
    "select_adapter",
    "stream",
]
