"""The explain layer: attention joined with attribution, in shap's terms (the only layer that imports shap).

* :class:`AttentionExplainer` / :func:`explain` - method scores as a ``shap.Explanation``;
* :func:`compare` - every method against shap's own explainer on the same target;
* :func:`report` - the standalone HTML report the CLI writes;
* ``targets`` - what is explained for each task; ``maskers`` - attention-aware shap maskers.
"""

from .compare import CompareResult, compare
from .explainer import AttentionExplainer, explain
from .report import report

__all__ = ["AttentionExplainer", "CompareResult", "compare", "explain", "report"]
