"""The methods a report and a comparison run when none are named (light: the command line's help reads it)."""

from __future__ import annotations

# The report's methods are the ones worth reading: the two that track exact Shapley values closely on the
# faithfulness benchmark (cplrp_mask, attnlrp: docs/faithfulness.md) and the best of the cheap attention
# baselines there (gae). Raw attention, rollout, norm, alti and grad_attention rank tokens far from the
# reference there, and flow costs a max-flow per token pair; they run when named (--methods).
REPORT_METHODS = ("cplrp_mask", "attnlrp", "gae")

# A comparison sets the faithful methods beside the attention-only ones it is usually asked about.
COMPARE_METHODS = ("cplrp_mask", "attnlrp", "raw", "rollout", "grad_attention", "gae")

# shap's budget per text for a report's reference when a text is too long for exact Shapley values. On the
# faithfulness benchmark (attn_plugins/explain/reference_accuracy.json) Partition at 100 evaluations agrees
# with exact values as well as at 500 (Spearman 0.93 both) for a fifth of the model calls; on a 118-token
# paragraph with MiniLM 500 evaluations took 17 s of CPU, 100 took 3 s.
REPORT_SHAP_EVALS = 100
