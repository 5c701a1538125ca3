"""Membership inference on the forget set (members) against never-trained holdout records (non-members).

Each score is oriented so that higher = "more likely a member": −loss, −zlib, Min-K% and Min-K%++ (at
k = 0.4 by default, the MUSE / open-unlearning setting), from ``scores.memorization`` (one forward per
batch). AUC = the ROC area of members vs non-members (scikit-learn): 0.5 = indistinguishable.
PrivLeak (MUSE): (AUC_model − AUC_gold) / AUC_gold, the gold model retrained without the forget set
defining the target; ≈ 0 is ideal, > 0 means the forget set still looks like training data
(under-unlearning), < 0 that it looks *less* seen than never-seen data (over-unlearning).
"""

from __future__ import annotations

import numpy as np

from unlearn_jax.data.tokenize import encode_records
from unlearn_jax.models.llama import ModelConfig
from unlearn_jax.runs.score import target_texts
from unlearn_jax.scores.memorization import score_records

ATTACKS = {"loss": ("loss", -1.0), "zlib": ("zlib", -1.0), "mink": ("mink", 1.0), "minkpp": ("minkpp", 1.0)}


def auc(member_scores, nonmember_scores) -> float:
    """ROC AUC with members as the positive class (higher score = member)."""
    from sklearn.metrics import roc_auc_score

    m, n = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    return float(roc_auc_score(np.r_[np.ones(len(m)), np.zeros(len(n))], np.r_[m, n]))


def priv_leak(model_auc: float, gold_auc: float) -> float:
    """MUSE's PrivLeak, as a fraction (×100 for MUSE's percent)."""
    return (model_auc - gold_auc) / gold_auc


def mia_aucs(params, config: ModelConfig, tokenizer, members, nonmembers, k: float = 0.4) -> dict[str, float]:
    """AUC of every attack in ``ATTACKS`` (Min-K%/Min-K%++ at ``k``), members vs non-members."""
    scored = {}
    for name, records in (("members", members), ("nonmembers", nonmembers)):
        data = encode_records(records, tokenizer, max_length=config.max_position_embeddings)
        scored[name] = score_records(params, config, data, target_texts(records), k=k)
    out = {}
    for attack, (key, sign) in ATTACKS.items():
        values = {name: [sign * row[key] for row in rows] for name, rows in scored.items()}
        out[attack] = auc(values["members"], values["nonmembers"])
    return out
