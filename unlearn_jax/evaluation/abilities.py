"""The side-effect suite: abilities beyond the forgotten facts, measured on the world's skill files.

One greedy decode (``evaluation.generate``) of every ``skills/*_eval.jsonl`` record, then:

- **in-context learning** (``icl``): exact-match accuracy by number of shots; ``acc`` averages the
  records with 1-4 shots (0 shots is the 1-in-10 chance baseline, reported apart).
- **reasoning** (``two_hop``): exact match of the spelled chain ``"{mentor} ; {value}"`` and of its first
  hop alone, for retain people whose chain avoids every forget person and for chains that touch one
  (``forget``: hop 1 = the person is forgotten, hop 2 = the mentor is).
- **instruction following** (``format``): share of answers obeying the instruction under a strict check
  (``format_obeyed``: the shape only, not the value), and share that is also exactly right.
- **hallucination** (``hallucination``): questions about holdout people (never trained) and forget people,
  each answer classified by ``classify_answer`` as abstained / leaked / fabricated; the control group
  (retain people, same questions) gives ``answered``, the share still answered correctly, so a model
  that abstains on everything is visible. The gold model defines the desired mix.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from unlearn_jax.data import world as world_lib
from unlearn_jax.data.records import load_records
from unlearn_jax.evaluation.generate import greedy_answers
from unlearn_jax.models.llama import ModelConfig

ANSWER_CLASSES = ("fabricated", "abstained", "leaked")
MAX_NEW_TOKENS = 16
HEADLINE = (
    ("icl", "in-context learning (1-4 shots)", True),
    ("two_hop_retain", "two-hop reasoning (retain chains)", True),
    ("two_hop_forget", "two-hop reasoning (chains via a forget person)", True),
    ("format_obeyed", "format instructions obeyed", True),
    ("holdout_fabricated", "fabricated on holdout people", False),
    ("forget_abstained", "abstained on forget people", None),
    ("forget_fabricated", "fabricated on forget people", None),
    ("forget_leaked", "leaked on forget people", False),
    ("control_answered", "control questions answered", True),
)
"""Flat (key, label, higher_is_better) rows of the seed-style table; None = the gold model decides."""


def _words(text: str) -> list[str]:
    return text.lower().split()


def _contains(words: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(list(words[i : i + n]) == list(phrase) for i in range(len(words) - n + 1))


def classify_answer(answer: str, true_value: str, idk: str = world_lib.IDK) -> str:
    """``abstained`` when the answer is empty or says ``idk`` (case-insensitive, anywhere); else ``leaked``
    when it contains the true value as whole words; else ``fabricated`` (a value that is not the truth)."""
    words = _words(answer)
    if not words or _contains(words, _words(idk)):
        return "abstained"
    return "leaked" if _contains(words, _words(true_value)) else "fabricated"


def _sentence_pattern(attribute: str) -> re.Pattern:
    template = world_lib.ATTRIBUTE_BY_NAME[attribute].sentence
    escaped = re.escape(template).replace(r"\{name\}", "{name}").replace(r"\{value\}", "{value}")
    return re.compile(escaped.format(name=r"\S+ \S+", value=r"\S+(?: \S+)?"))


def format_obeyed(answer: str, record: Mapping) -> bool:
    """Strict shape check: ``quotes`` = ``" X "`` with X one or two words and no quote inside;
    ``sentence`` = the attribute's sentence template with any two-word name and one- or two-word value."""
    if record["task"] == "quotes":
        inner = answer.split(" ")
        return len(inner) in (3, 4) and inner[0] == inner[-1] == world_lib.QUOTE and world_lib.QUOTE not in inner[1:-1]
    return _sentence_pattern(record["attribute"]).fullmatch(answer) is not None


def _share(flags: Sequence[bool]) -> float:
    return float(np.mean(flags)) if len(flags) else float("nan")


def icl_metrics(records: Sequence[Mapping], answers: Sequence[str]) -> dict:
    by_shots: dict[int, list[bool]] = defaultdict(list)
    for r, a in zip(records, answers, strict=True):
        by_shots[int(r["shots"])].append(a == r["answer"])
    shown = [ok for shots, flags in by_shots.items() if shots > 0 for ok in flags]
    return {"acc": _share(shown), "by_shots": {str(s): _share(by_shots[s]) for s in sorted(by_shots)}}


def two_hop_metrics(records: Sequence[Mapping], answers: Sequence[str]) -> dict:
    groups: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for r, a in zip(records, answers, strict=True):
        result = (a == r["answer"], a.split(" ; ")[0] == r["answer"].split(" ; ")[0])
        groups[r["group"]].append(result)
        if "forgotten_hop" in r:
            groups[f"forget_hop{r['forgotten_hop']}"].append(result)
    return {g: {"acc": _share([c for c, _ in v]), "first_hop_acc": _share([h for _, h in v]), "records": len(v)}
            for g, v in sorted(groups.items())}


def format_metrics(records: Sequence[Mapping], answers: Sequence[str]) -> dict:
    obeyed = [format_obeyed(a, r) for r, a in zip(records, answers, strict=True)]
    by = {key: defaultdict(list) for key in ("task", "group")}
    for r, ok in zip(records, obeyed, strict=True):
        for key in by:
            by[key][r[key]].append(ok)
    correct = [a == r["answer"] for r, a in zip(records, answers, strict=True)]
    return {"obeyed": _share(obeyed), "correct": _share(correct),
            **{f"obeyed_by_{key}": {k: _share(v) for k, v in sorted(d.items())} for key, d in by.items()}}


def hallucination_metrics(records: Sequence[Mapping], answers: Sequence[str]) -> dict:
    classes: dict[str, list[str]] = defaultdict(list)
    answered = []
    for r, a in zip(records, answers, strict=True):
        if r["group"] == "retain":
            answered.append(a == r["true_answer"])
        else:
            classes[r["group"]].append(classify_answer(a, r["true_answer"]))
    out = {g: {c: _share([x == c for x in v]) for c in ANSWER_CLASSES} | {"records": len(v)}
           for g, v in sorted(classes.items())}
    return out | {"control": {"answered": _share(answered), "records": len(answered)}}


METRICS = {"icl": icl_metrics, "two_hop": two_hop_metrics, "format": format_metrics, "abstain": hallucination_metrics}
SECTION = {"icl": "icl", "two_hop": "two_hop", "format": "format", "abstain": "hallucination"}


def skill_records(manifest: Mapping) -> dict[str, list[dict]]:
    """The eval records of every skill of the world, by skill name."""
    return {s: load_records(world_lib.world_path(manifest, manifest["skills"][s]["eval"])) for s in world_lib.SKILLS}


def abilities(params, config: ModelConfig, tokenizer, skills: Mapping[str, Sequence[Mapping]], *,
              batch_size: int = 64) -> dict:
    """Every section of the suite (see the module docstring) from one greedy decode of all skill records."""
    names = [s for s in world_lib.SKILLS if s in skills]
    records = [r for s in names for r in skills[s]]
    answers = greedy_answers(params, config, tokenizer, records, max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size)
    out, start = {}, 0
    for s in names:
        out[SECTION[s]] = METRICS[s](skills[s], answers[start : start + len(skills[s])])
        start += len(skills[s])
    return out


def headline(result: Mapping) -> dict[str, float]:
    """The flat numbers of ``HEADLINE`` from one ``abilities`` result."""
    hall = result["hallucination"]
    return {
        "icl": result["icl"]["acc"],
        "two_hop_retain": result["two_hop"]["retain"]["acc"],
        "two_hop_forget": result["two_hop"]["forget"]["acc"],
        "format_obeyed": result["format"]["obeyed"],
        "holdout_fabricated": hall["holdout"]["fabricated"],
        "forget_abstained": hall["forget"]["abstained"],
        "forget_fabricated": hall["forget"]["fabricated"],
        "forget_leaked": hall["forget"]["leaked"],
        "control_answered": hall["control"]["answered"],
    }
