"""Per-record knowledge measurements from one teacher-forced forward pass per batch.

``correct``: greedy decoding after [BOS] + prompt reproduces the answer tokens and EOS — computed as
"every target token is the argmax given the reference prefix", which is the same thing in one pass.
``nll``: S_θ, the summed answer NLL (EOS included); ``tokens``: |y|; mean answer NLL = nll / tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import numpy as np

from unlearn_jax.data.tokenize import TokenSet, encode_records
from unlearn_jax.errors import UserError
from unlearn_jax.models.llama import ModelConfig
from unlearn_jax.objectives.logprobs import forward_logits, greedy_correct, sequence_nll, target_logprobs
from unlearn_jax.objectives.reference import map_records


@partial(jax.jit, static_argnums=1)
def _batch_stats(params, config: ModelConfig, batch: dict) -> dict:
    logits = forward_logits(params, config, batch)
    lp, mask = target_logprobs(logits, batch)
    return {"nll": sequence_nll(lp, mask), "tokens": mask.sum(-1), "correct": greedy_correct(logits, batch)}


def record_stats(params, config: ModelConfig, data: TokenSet, batch_size: int = 64) -> dict[str, np.ndarray]:
    """{"nll", "tokens", "correct"}: one entry per record of ``data`` (one compilation per set)."""
    return map_records(partial(_batch_stats, params, config), data, batch_size)


def summarize(stats: dict[str, np.ndarray]) -> dict[str, float]:
    """accuracy (share of records answered correctly) and mean answer NLL (token-mean over the set)."""
    return {"acc": float(stats["correct"].mean()), "nll": float(stats["nll"].sum() / max(stats["tokens"].sum(), 1))}


def mean_answer_nll(params, config: ModelConfig, tokenizer, records, answer_field: str = "answer") -> np.ndarray:
    """Token-mean NLL of each record's ``answer_field`` given its prompt (EOS included), float [N]."""
    stats = record_stats(params, config, encode_records(records, tokenizer, answer_field=answer_field))
    return stats["nll"] / np.maximum(stats["tokens"], 1)


def truth_ratios(params, config: ModelConfig, tokenizer, records) -> np.ndarray:
    """TOFU's truth ratio per record, R = P̄_pert / P_para, each P the length-normalised probability
    exp(−mean token NLL) of an answer given the (original) question, P̄_pert the geometric mean over the
    perturbed answers: R = exp(L_para − mean_j L_pert,j). R < 1: the model prefers the true (paraphrased)
    answer; R ≈ 1: it cannot tell true from false. Needs ``paraphrased_answer`` and ``perturbed_answers``."""
    missing = [r["id"] for r in records if not r.get("paraphrased_answer") or not r.get("perturbed_answers")]
    if missing:
        raise UserError(f"record {missing[0]} has no paraphrased_answer/perturbed_answers (needed for the truth "
                        "ratio)")
    para = mean_answer_nll(params, config, tokenizer, records, "paraphrased_answer")
    expanded = [{**r, "answer": p} for r in records for p in r["perturbed_answers"]]
    pert = mean_answer_nll(params, config, tokenizer, expanded)
    owners = np.repeat(np.arange(len(records)), [len(r["perturbed_answers"]) for r in records])
    mean_pert = np.bincount(owners, weights=pert) / np.bincount(owners)
    return np.exp(para - mean_pert)


def truth_score(ratios: np.ndarray) -> float:
    """TOFU's reported truth ratio for retain-like sets: mean of max(0, 1 − R) (higher = better)."""
    return float(np.mean(np.maximum(0.0, 1.0 - np.asarray(ratios))))


def rouge_l(generated: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """ROUGE-L recall and F1 per pair (the ``rouge-score`` package, Porter stemming, as TOFU reports)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, gen)["rougeL"] for gen, ref in zip(generated, references, strict=True)]
    return {"recall": np.array([s.recall for s in scores]), "f1": np.array([s.fmeasure for s in scores])}


def forget_quality(model_ratios: np.ndarray, gold_ratios: np.ndarray) -> float:
    """TOFU's forget quality: the two-sample Kolmogorov-Smirnov test's p-value between the truth ratios of
    the model and of the gold model on the forget set (high = indistinguishable from never having learned)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.asarray(model_ratios), np.asarray(gold_ratios)).pvalue)


def harmonic_mean(values: Sequence[float]) -> float:
    """Model utility's aggregate: the harmonic mean (0 when any value is 0)."""
    values = np.asarray(values, dtype=float)
    return 0.0 if np.any(values <= 0) else float(len(values) / np.sum(1.0 / values))


def knowledge_metrics(params, config: ModelConfig, tokenizer, records, *, max_new_tokens: int = 16) -> dict:
    """Per split: greedy accuracy ("acc", teacher-forced), mean answer probability exp(−mean NLL) ("prob"),
    ROUGE-L recall/F1 of the greedy generation, truth ratio (mean R) and truth score (mean max(0, 1 − R)),
    paraphrase accuracy; ``truth_ratios`` per record for forget quality."""
    from unlearn_jax.evaluation.generate import greedy_answers

    stats = record_stats(params, config, encode_records(records, tokenizer))
    nll = stats["nll"] / np.maximum(stats["tokens"], 1)
    generated = greedy_answers(params, config, tokenizer, records, max_new_tokens=max_new_tokens)
    rouge = rouge_l(generated, [r["answer"] for r in records])
    out = {"records": len(records), "acc": float(stats["correct"].mean()), "prob": float(np.mean(np.exp(-nll))),
           "rouge_l_recall": float(rouge["recall"].mean()), "rouge_l_f1": float(rouge["f1"].mean())}
    if all(r.get("paraphrased_answer") and r.get("perturbed_answers") for r in records):
        ratios = truth_ratios(params, config, tokenizer, records)
        out.update(truth_ratio=float(ratios.mean()), truth=truth_score(ratios), truth_ratios=ratios.tolist())
    if all(r.get("paraphrased_prompt") for r in records):
        para = [{**r, "prompt": r["paraphrased_prompt"]} for r in records]
        out["paraphrase_acc"] = float(record_stats(params, config, encode_records(para, tokenizer))["correct"].mean())
    return out
