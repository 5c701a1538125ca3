"""Verdicts: did unlearning remove the knowledge, hide it, or not forget it at all?

Every probe yields, per forget record, whether the knowledge shows (a correct greedy answer, a probe
hit) for the audited model M and for a baseline B under the *same* attack. The excess of M over B is
``mean(M) − mean(B)``; it is **significant** when it exceeds ``margin`` (default 0.05: five points of
accuracy) and the lower end of its paired-bootstrap confidence interval (``resamples`` draws of the
records, seeded; default 95 %) is above zero. Then, per probe:

- **not_forgotten**: M's knowledge *before* the attack already significantly exceeds B's;
- **hidden**: before the attack it does not, but under the attack it does (worst case over the probe's
  settings: quantization schemes, sparsities, relearning steps, layers);
- **removed**: neither.

B is the gold model MR (retrained without the forget data) when given: an attack that "recovers" what
the gold model also produces measures the attack, not the unlearning. Without MR, B is M itself before
the attack (``baseline="self"``): hidden = the attack significantly raises M's forget knowledge, and
not_forgotten = M is not significantly below the original model M0 — a weaker judgement, since some
attacks (relearning) can teach facts anew, which only the gold model can tell apart.
Overall: not_forgotten if any probe says so, else hidden if any does, else removed.
"""

from __future__ import annotations

import numpy as np

MARGIN = 0.05
CONFIDENCE = 0.95
RESAMPLES = 1000
VERDICTS = ("removed", "hidden", "not_forgotten")


def excess(model_hits, baseline_hits, *, margin: float = MARGIN, confidence: float = CONFIDENCE,
           resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Paired bootstrap of mean(model_hits) − mean(baseline_hits) over records."""
    m = np.asarray(model_hits, dtype=float)
    b = np.asarray(baseline_hits, dtype=float)
    if m.shape != b.shape or m.ndim != 1 or not len(m):
        raise ValueError(f"paired hits must be equal-length vectors (got {m.shape} and {b.shape})")
    diff = m - b
    draws = np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[draws].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    point = float(diff.mean())
    return {"excess": point, "ci": [float(lo), float(hi)], "significant": bool(point > margin and lo > 0)}


def judge(not_forgotten: bool, attacked: list[dict]) -> str:
    """Verdict from the before-attack test and the ``excess`` under each attack setting."""
    if not_forgotten:
        return "not_forgotten"
    return "hidden" if any(a["significant"] for a in attacked) else "removed"


def overall(verdicts: list[str]) -> str:
    for verdict in ("not_forgotten", "hidden"):
        if verdict in verdicts:
            return verdict
    return "removed"
