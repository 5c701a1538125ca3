"""Capacity probe: how fast does a model learn *new* facts after unlearning?

Hiding knowledge costs capacity (the seed's third symptom of fake unlearning): a model whose weights
are busy suppressing answers should learn a new task more slowly than the gold model. Each model is
fine-tuned on the same new-fact records with the same budget and seed (``relearn.finetune_curve``);
reported: the accuracy/NLL curve on those records, the first checkpoint reaching ``target`` accuracy
(steps-to-learn, None if never) and the final NLL.
"""

from __future__ import annotations

from unlearn_jax.audit.relearn import FinetuneConfig, finetune_curve
from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.models.llama import ModelConfig

DEFAULT_CHECKPOINTS = (0, 10, 20, 40, 60)
DEFAULT_TARGET = 0.8


def capacity(params, config: ModelConfig, new_task: TokenSet, ft: FinetuneConfig,
             target: float = DEFAULT_TARGET) -> dict:
    """{"curve": [{"step", "new": {"acc", "nll"}, "new_correct"}], "steps_to_target", "final"}."""
    curve = finetune_curve(params, config, new_task, {"new": new_task}, ft)
    reached = next((row["step"] for row in curve if row["new"]["acc"] >= target), None)
    return {"curve": curve, "steps_to_target": reached, "target": target, "final": curve[-1]["new"]}
