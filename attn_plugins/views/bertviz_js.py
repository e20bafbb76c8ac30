"""bertviz's own front-end scripts, adapted to run offline on parameters decoded from our payloads."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from ..errors import AttnPluginsError
from .page import script_code

# bertviz points require.js at CDN URLs; the page registers the vendored copies under the same names.
_REQUIRE_CONFIG = re.compile(r"require\.config\(\{.*?\}\);", re.DOTALL)
PARAMS_NAME = "attnParams"
# The one statement of each script that reads its parameters, and what it reads instead.
_PARAM_MARKERS = {
    "head_view": ("params = PYTHON_PARAMS;", f"params = {PARAMS_NAME};"),
    "model_view": ("params = PYTHON_PARAMS;", f"params = {PARAMS_NAME};"),
    "neuron_view": ("params = window.bertviz_params", f"params = {PARAMS_NAME}"),
}


@cache
def bertviz_source(view: str) -> str:
    """The JavaScript of one bertviz view with its CDN configuration removed and its parameters renamed."""
    if view not in _PARAM_MARKERS:
        raise AttnPluginsError(f"unknown bertviz view {view!r}")
    code = resources.files("bertviz").joinpath(f"{view}.js").read_text(encoding="utf-8")
    code, n_config = _REQUIRE_CONFIG.subn("", code)
    marker, replacement = _PARAM_MARKERS[view]
    n_marker = code.count(marker)
    # A bertviz release that reshapes its scripts must fail here, loudly, not render a blank page.
    if n_config != 1 or n_marker != 1:
        raise AttnPluginsError(
            f"bertviz's {view}.js has an unexpected layout ({n_config} require.config blocks, {n_marker} "
            f"parameter markers); this attn-plugins release supports bertviz 1.4"
        )
    return script_code(code.replace(marker, replacement))


def bertviz_script(view: str, params_id: str, root_id: str) -> str:
    """A script that decodes the parameter block ``params_id`` and runs bertviz's ``view`` on it."""
    return f"attnViews.run({params_id!r}, {root_id!r}, true, function ({PARAMS_NAME}) {{\n{bertviz_source(view)}\n}});"
