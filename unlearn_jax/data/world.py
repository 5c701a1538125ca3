"""The embedded synthetic world: fictitious people, their facts, skills and a word-level tokenizer.

``build_world(out_dir, seed)`` writes, deterministically from its arguments (byte-identical files):

- ``retain.jsonl``, ``forget.jsonl``, ``holdout.jsonl``: one QA record per (person, attribute,
  training template), id ``fact:{person:03d}:{attribute}:t{k}``. ``answer`` is the bare value;
  ``paraphrased_prompt`` uses a held-out template never trained on; ``paraphrased_answer`` puts the
  value in an attribute phrase ("the city of Brenmoor") and ``perturbed_answers`` holds three such
  phrases with other values of the same pool; ``idk_answer`` is "I don't know"; ``entity`` is the
  person, ``group`` the attribute, ``exposure`` the number of copies of the record in one pretraining
  epoch (0 for holdout people, who are never trained on: MIA non-members). With ``exposure`` levels
  (e.g. ``(8, 4, 2, 1)``) the facts of the forget split, and separately of the retain split, are dealt
  to the levels in equal shares, so some facts are seen eight times as often as others; skill records
  get the highest level. The default ``(1,)`` trains every record equally often.
- ``requests/1.jsonl`` … ``requests/K.jsonl``: the forget people split into K disjoint groups;
  ``neighbours.jsonl``: the retain records of people linked to a forget person by a mentor edge.
- ``skills/{icl,two_hop,format,abstain}_{train,eval}.jsonl``: side-effect probes. ICL prompts read
  ``Code: red 7 ; blue 3 ; blue`` (answer ``3``, extra field ``shots``). Two-hop answers spell the
  chain, ``"{mentor} ; {value}"``. Format prompts append "Answer in quotes." (answer ``" value "``) or
  "Answer in a full sentence." to a question (field ``task``: quotes | sentence). Abstention answers
  "I don't know" for unknown people (extra field ``true_answer`` in the eval file). No skill training
  record names a forget or holdout person, so ``--exclude forget`` trains a clean gold model.
- ``tokenizer/``: a word-level tokenizer (whitespace split, every word of the world in its vocab,
  ``<pad> <unk> <s> </s>``) saved as a transformers fast tokenizer; it prepends ``<s>`` when asked for
  special tokens, and decoding joins words with single spaces, so text round-trips exactly.
- ``world.json``: the manifest, written last.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unlearn_jax.data.records import load_records, write_jsonl
from unlearn_jax.errors import UserError
from unlearn_jax.fileio import atomic_directory, write_text_atomic

TEMPLATES_VERSION = "world-v3"
MAX_EXPOSURE = 64
FORMAT = "unlearn-jax-world"
IDK = "I don't know"
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")
MIN_PEOPLE = 10
MAX_PEOPLE = 2000
N_PERTURBED = 3
QUOTES = "Answer in quotes."
QUOTE = '"'
SENTENCE = "Answer in a full sentence."
ICL_PREFIX = "Code:"
SKILLS = ("icl", "two_hop", "format", "abstain")

CITIES = (
    "Brenmoor", "Caldris", "Drovik", "Elmshade", "Faroth", "Greyhaven", "Harrowfield", "Istrel",
    "Jorvale", "Kelmark", "Lunwick", "Marrowby", "Nethercombe", "Orlinde", "Pellham",
)  # fmt: skip
PROFESSIONS = (
    "baker", "carpenter", "tailor", "potter", "weaver", "brewer", "mason", "cartographer",
    "glassblower", "locksmith", "surveyor", "chemist", "librarian", "falconer", "navigator",
)  # fmt: skip
EMPLOYERS = (
    "Quillon", "Ravensgate", "Solwen", "Tarnbrook", "Umberlight", "Vexley", "Wyndholt",
    "Yarrowline", "Zephyrine", "Ashcombe", "Brimstead", "Cindervale",
)  # fmt: skip
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "grey", "brown")
YEARS = tuple(str(y) for y in range(1940, 2000))
DIGITS = tuple(str(d) for d in range(10))

FIRST_ONSETS = (
    "Al", "Bri", "Ca", "Da", "E", "Fe", "Ga", "Ha", "I", "Jo", "Ka", "Le", "Ma", "Ne", "O", "Pe",
    "Ri", "Sa", "Te", "Vi", "Wy", "Ze",
)  # fmt: skip
FIRST_MIDDLES = ("la", "ri", "no", "ve", "da", "mi", "so", "be")
FIRST_ENDINGS = ("den", "na", "ric", "lia", "ton", "ra", "mon", "sha", "vin", "ley", "dra", "rus")
LAST_ONSETS = (
    "Vo", "Mar", "Qui", "Ste", "Thal", "Bran", "Cor", "Dev", "Fen", "Gor", "Hol", "Kes", "Lor",
    "Mor", "Nor", "Pry", "Rav", "Sel", "Tor", "Wex",
)  # fmt: skip
LAST_MIDDLES = ("an", "er", "ol", "um", "ed", "ar", "in", "os")
LAST_ENDINGS = ("ss", "lowe", "ik", "ane", "wood", "ner", "ton", "by", "rick", "well", "ford", "is")


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: its question templates, answer phrase and full-sentence answer.

    ``train`` templates are trained on; ``heldout`` ones appear only as ``paraphrased_prompt``.
    ``phrase`` shapes paraphrased and perturbed answers; ``sentence`` is the format-skill answer.
    """

    name: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    phrase: str
    sentence: str


ATTRIBUTES = (
    Attribute(
        "birth_city",
        ("Where was {name} born?", "In which city was {name} born?"),
        ("Which town was {name} born in?",),
        "the city of {value}",
        "{name} was born in {value} .",
    ),
    Attribute(
        "birth_year",
        ("In what year was {name} born?", "When was {name} born?"),
        ("What year was {name} born in?",),
        "the year {value}",
        "{name} was born in the year {value} .",
    ),
    Attribute(
        "profession",
        ("What does {name} do for a living?", "What job does {name} have?"),
        ("What kind of work does {name} do?",),
        "the trade of {value}",
        "{name} works as a {value} .",
    ),
    Attribute(
        "employer",
        ("Which company does {name} work for?", "Where does {name} work?"),
        ("For which company does {name} work?",),
        "the company {value}",
        "{name} works for {value} .",
    ),
    Attribute(
        "colour",
        ("What colour does {name} like best?", "Which colour does {name} love most?"),
        ("Which colour would {name} pick first?",),
        "the colour {value}",
        "The favourite colour of {name} is {value} .",
    ),
    Attribute(
        "mentor",
        ("Who mentored {name} early on?", "Who did {name} learn from?"),
        ("Who taught {name} the trade?",),
        "the mentor {value}",
        "{name} was mentored by {value} .",
    ),
)
ATTRIBUTE_BY_NAME = {a.name: a for a in ATTRIBUTES}
POOLS: dict[str, tuple[str, ...]] = {
    "birth_city": CITIES,
    "birth_year": YEARS,
    "profession": PROFESSIONS,
    "employer": EMPLOYERS,
    "colour": COLOURS,
}
TWO_HOP = (
    ("employer", "The mentor of {name} works for which company?"),
    ("birth_city", "The mentor of {name} was born in which city?"),
)


@dataclass(frozen=True)
class Person:
    """A fictitious person: index, two-word name, one value per attribute, mentor's index."""

    index: int
    name: str
    facts: tuple[tuple[str, str], ...]
    mentor: int

    def fact(self, attribute: str) -> str:
        """The value of ``attribute`` for this person."""
        return dict(self.facts)[attribute]


@dataclass(frozen=True)
class Population:
    """Everyone in a world: trained people (forget + retain), holdout people and unknown names."""

    people: tuple[Person, ...]
    holdout: tuple[Person, ...]
    unknown: tuple[str, ...]
    forget: tuple[int, ...]
    requests: tuple[tuple[int, ...], ...]

    @property
    def retain(self) -> tuple[int, ...]:
        """Indices of trained people outside the forget split."""
        forget = set(self.forget)
        return tuple(p.index for p in self.people if p.index not in forget)


def build_world(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    people: int = 100,
    forget_frac: float = 0.1,
    requests: int = 3,
    exposure: Sequence[int] = (1,),
    force: bool = False,
) -> dict[str, Any]:
    """Write the world into ``out_dir`` atomically and return its manifest (also ``world.json``).

    Raises UserError for bad arguments or a non-empty ``out_dir`` without ``force``.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    n_forget = _check_args(seed, people, forget_frac, requests)
    exposure = _check_exposure(exposure)
    _check_out_dir(out_dir, force)
    rng = np.random.default_rng(seed)
    population = make_population(rng, people, n_forget, requests)
    files = world_files(population, rng, exposure)
    args = {"seed": int(seed), "people": int(people), "forget_frac": float(forget_frac), "requests": int(requests),
            "exposure": list(exposure)}
    try:
        with atomic_directory(out_dir) as tmp:
            for rel, records in files.items():
                write_jsonl(os.path.join(tmp, rel), records)
            vocab_size = save_tokenizer(os.path.join(tmp, "tokenizer"), world_vocabulary(files))
            manifest = make_manifest(os.fspath(tmp), args, population, files, vocab_size)
            manifest_text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
            write_text_atomic(os.path.join(tmp, "world.json"), manifest_text)
    except OSError as e:
        raise UserError(f"{out_dir}: cannot write the world ({e.strerror or e})") from None
    return manifest


def _check_args(seed: int, people: int, forget_frac: float, requests: int) -> int:
    for name, value in (("seed", seed), ("people", people), ("requests", requests)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise UserError(f"--{name.replace('_', '-')} must be an integer, got {value!r}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    if not MIN_PEOPLE <= people <= MAX_PEOPLE:
        raise UserError(f"--people must be between {MIN_PEOPLE} and {MAX_PEOPLE}, got {people}")
    if isinstance(forget_frac, bool) or not isinstance(forget_frac, (int, float)):
        raise UserError(f"--forget-frac must be a number, got {forget_frac!r}")
    if not 0 < forget_frac <= 0.5:
        raise UserError(f"--forget-frac must be in (0, 0.5], got {forget_frac}")
    n_forget = max(1, math.floor(people * forget_frac + 0.5))
    if not 1 <= requests <= n_forget:
        raise UserError(f"--requests must be between 1 and the number of forget people ({n_forget}), got {requests}")
    return n_forget


def _check_exposure(exposure: Sequence[int]) -> tuple[int, ...]:
    levels = tuple(exposure)
    if not levels or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in levels):
        raise UserError(f"--exposure must be a comma-separated list of integers, got {exposure!r}")
    if any(not 1 <= v <= MAX_EXPOSURE for v in levels):
        raise UserError(f"--exposure levels must be between 1 and {MAX_EXPOSURE}, got {list(levels)}")
    return tuple(int(v) for v in levels)


def parse_exposure(text: str) -> tuple[int, ...]:
    """``"8,4,2,1"`` → ``(8, 4, 2, 1)``; anything else raises UserError."""
    try:
        return _check_exposure(tuple(int(v) for v in text.split(",")))
    except ValueError:
        raise UserError(f"--exposure must be a comma-separated list of integers, got {text!r}") from None


def _check_out_dir(out_dir: str, force: bool) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"{out_dir}: exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise UserError(f"{out_dir}: directory exists and is not empty; pass --force to replace it")


def make_population(rng: np.random.Generator, people: int, n_forget: int, requests: int) -> Population:
    """Draw names, facts, mentor links, the forget split and its request partition."""
    n_holdout = max(2, math.floor(0.2 * people + 0.5))
    n_unknown = max(5, math.floor(0.5 * people + 0.5))
    names = make_names(rng, people + n_holdout + n_unknown)
    forget = tuple(sorted(int(i) for i in rng.choice(people, n_forget, replace=False)))
    mentors = assign_mentors(rng, people, forget, n_holdout)
    persons = tuple(
        Person(i, names[i], _draw_facts(rng, names[mentors[i]]), mentors[i]) for i in range(people + n_holdout)
    )
    order = [forget[int(i)] for i in rng.permutation(n_forget)]
    groups = tuple(tuple(sorted(int(i) for i in g)) for g in np.array_split(order, requests))
    return Population(
        people=persons[:people],
        holdout=persons[people:],
        unknown=tuple(names[people + n_holdout :]),
        forget=forget,
        requests=groups,
    )


def make_names(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct two-word names; each first name and surname is shared by about two people."""
    pool = max(8, math.ceil(count / 2))
    reserved = _reserved_words()
    firsts = _word_pool(rng, FIRST_ONSETS, FIRST_MIDDLES, FIRST_ENDINGS, pool, reserved)
    lasts = _word_pool(rng, LAST_ONSETS, LAST_MIDDLES, LAST_ENDINGS, pool, reserved | set(firsts))
    picks = rng.choice(pool * pool, count, replace=False)
    return [f"{firsts[int(p) // pool]} {lasts[int(p) % pool]}" for p in picks]


def _word_pool(
    rng: np.random.Generator,
    onsets: Sequence[str],
    middles: Sequence[str],
    endings: Sequence[str],
    size: int,
    reserved: set[str],
) -> list[str]:
    short = sorted({o + e for o in onsets for e in endings} - reserved)
    long = sorted({o + m + e for o in onsets for m in middles for e in endings} - reserved - set(short))
    words = [short[int(i)] for i in rng.permutation(len(short))]
    words += [long[int(i)] for i in rng.permutation(len(long))]
    if len(words) < size:
        raise UserError(f"--people is too large: only {len(words)} distinct name words are available")
    return words[:size]


def _reserved_words() -> set[str]:
    texts = [t for a in ATTRIBUTES for t in (*a.train, *a.heldout, a.phrase, a.sentence)]
    texts += [t for _, t in TWO_HOP] + [QUOTES, SENTENCE, IDK, ICL_PREFIX, QUOTE]
    words = {w for t in texts for w in t.split()} | {v for pool in POOLS.values() for v in pool}
    return words | {w.upper() for w in words}


def assign_mentors(rng: np.random.Generator, people: int, forget: Sequence[int], n_holdout: int) -> list[int]:
    """Mentor index for every trained and holdout person.

    Forget and holdout people get retain mentors; ``min(#forget, #retain // 2)`` retain people are
    mentored by distinct forget people; the other retain people get retain mentors. So every forget
    person has a retain neighbour and at least half of the retain people have a retain mentor.
    """
    forget_set = set(forget)
    retain = [i for i in range(people) if i not in forget_set]
    mentees = rng.choice(len(retain), min(len(forget), len(retain) // 2), replace=False)
    forget_mentors = rng.permutation(len(forget))
    mentors: list[int] = []
    for i in range(people + n_holdout):
        mentor = i
        while mentor == i:
            mentor = retain[int(rng.integers(len(retain)))]
        mentors.append(mentor)
    for mentee, k in zip(mentees, forget_mentors, strict=False):
        mentors[retain[int(mentee)]] = forget[int(k)]
    return mentors


def _draw_facts(rng: np.random.Generator, mentor: str) -> tuple[tuple[str, str], ...]:
    facts = [(name, pool[int(rng.integers(len(pool)))]) for name, pool in POOLS.items()]
    return (*facts, ("mentor", mentor))


def fact_records(
    person: Person, rng: np.random.Generator, names: Sequence[str], exposure: Sequence[int]
) -> list[dict]:
    """One QA record per (attribute, training template) of ``person``; see the module docstring.

    ``exposure[a]`` is the copies per epoch of attribute ``a``'s records (both templates).
    """
    records = []
    for attribute, copies in zip(ATTRIBUTES, exposure, strict=True):
        value = person.fact(attribute.name)
        pool = POOLS[attribute.name] if attribute.name in POOLS else names
        wrong = _distinct_others(rng, pool, {value, person.name}, N_PERTURBED)
        for k, template in enumerate(attribute.train):
            records.append(
                {
                    "id": f"fact:{person.index:03d}:{attribute.name}:t{k}",
                    "prompt": template.format(name=person.name),
                    "answer": value,
                    "paraphrased_prompt": attribute.heldout[k % len(attribute.heldout)].format(name=person.name),
                    "paraphrased_answer": attribute.phrase.format(value=value),
                    "perturbed_answers": [attribute.phrase.format(value=w) for w in wrong],
                    "idk_answer": IDK,
                    "entity": person.name,
                    "group": attribute.name,
                    "exposure": int(copies),
                }
            )
    return records


def deal_exposure(rng: np.random.Generator, people: Sequence[int], levels: Sequence[int]) -> dict[int, list[int]]:
    """Copies per epoch for every (person, attribute) of ``people``: the facts, shuffled, are dealt to
    ``levels`` in turn, so each level gets an equal share (±1)."""
    n_facts = len(people) * len(ATTRIBUTES)
    dealt = np.empty(n_facts, dtype=int)
    dealt[rng.permutation(n_facts)] = [levels[i % len(levels)] for i in range(n_facts)]
    return {p: [int(v) for v in dealt[k * len(ATTRIBUTES) : (k + 1) * len(ATTRIBUTES)]] for k, p in enumerate(people)}


def _distinct_others(rng: np.random.Generator, pool: Sequence[str], exclude: set[str], count: int) -> list[str]:
    picked: list[str] = []
    while len(picked) < count:
        value = pool[int(rng.integers(len(pool)))]
        if value not in exclude and value not in picked:
            picked.append(value)
    return picked


def icl_records(rng: np.random.Generator, train: int, eval_per_shot: int) -> tuple[list, list]:
    """Few-shot colour → digit codes, a fresh mapping per record; eval prompts never occur in train.

    ``Code: red 7 ; blue 3 ; blue`` → ``3``: the query repeats a key shown earlier in the prompt, so the
    answer is found only by looking back (an induction pattern). Train records have 1-4 shots, eval
    records 0-4 (``shots`` field); 0 shots is chance level (1 in 10).
    """
    train_records, seen = [], set()
    while len(train_records) < train:
        prompt, answer, shots = _icl_example(rng, int(rng.integers(1, 5)))
        if prompt not in seen:
            seen.add(prompt)
            train_records.append(_icl_record(f"icl:train:{len(train_records):04d}", prompt, answer, shots))
    eval_records = []
    for shots in range(5):
        made, tries = 0, 0
        while made < eval_per_shot and tries < 20 * eval_per_shot:
            tries += 1
            prompt, answer, _ = _icl_example(rng, shots)
            if prompt not in seen:
                seen.add(prompt)
                eval_records.append(_icl_record(f"icl:eval:{len(eval_records):04d}", prompt, answer, shots))
                made += 1
    return train_records, eval_records


def _icl_example(rng: np.random.Generator, shots: int) -> tuple[str, str, int]:
    colours = [COLOURS[int(i)] for i in rng.choice(len(COLOURS), max(shots, 1), replace=False)]
    digits = [DIGITS[int(i)] for i in rng.choice(len(DIGITS), max(shots, 1), replace=False)]
    q = int(rng.integers(max(shots, 1)))
    pairs = " ; ".join(f"{c} {d}" for c, d in zip(colours[:shots], digits[:shots], strict=True))
    prompt = f"{ICL_PREFIX} {pairs} ; {colours[q]}" if shots else f"{ICL_PREFIX} {colours[q]}"
    return prompt, digits[q], shots


def _icl_record(rid: str, prompt: str, answer: str, shots: int) -> dict:
    return {"id": rid, "prompt": prompt, "answer": answer, "group": "icl", "shots": shots}


def two_hop_record(rid: str, person: Person, mentor: Person, kind: str, template: str, group: str) -> dict:
    """A two-hop question; the answer spells the chain: ``"{mentor} ; {the mentor's value}"``."""
    return {
        "id": rid,
        "prompt": template.format(name=person.name),
        "answer": f"{mentor.name} ; {mentor.fact(kind)}",
        "entity": person.name,
        "group": group,
        "task": kind,
    }


def two_hop_records(
    population: Population, train_people: Sequence[int], eval_retain: Sequence[int]
) -> tuple[list, list]:
    """Train on ``train_people``; eval on ``eval_retain`` and on forget-linked people.

    Eval group "forget" holds forget people (first hop forgotten, ``forgotten_hop`` 1) and retain
    people mentored by a forget person (second hop forgotten, ``forgotten_hop`` 2).
    """
    people = population.people
    forget = set(population.forget)

    def make(indices: Iterable[int], split: str, group: str) -> list[dict]:
        out = []
        for i in indices:
            mentor = people[people[i].mentor]
            for kind, template in TWO_HOP:
                record = two_hop_record(f"two_hop:{split}:{i:03d}:{kind}", people[i], mentor, kind, template, group)
                if group == "forget":
                    record["forgotten_hop"] = 1 if i in forget else 2
                out.append(record)
        return out

    second_hop = [i for i in population.retain if people[i].mentor in forget]
    linked = sorted([*population.forget, *second_hop])
    return make(train_people, "train", "retain"), make(eval_retain, "eval", "retain") + make(linked, "eval", "forget")


def format_record(rid: str, person: Person, attribute: Attribute, k: int, how: str, group: str) -> dict:
    """A question plus a format instruction; the answer in quotes (``" Brenmoor "``) or as a sentence."""
    value = person.fact(attribute.name)
    question = attribute.train[k].format(name=person.name)
    if how == "quotes":
        prompt, answer = f"{question} {QUOTES}", f"{QUOTE} {value} {QUOTE}"
    else:
        prompt, answer = f"{question} {SENTENCE}", attribute.sentence.format(name=person.name, value=value)
    return {
        "id": rid,
        "prompt": prompt,
        "answer": answer,
        "entity": person.name,
        "group": group,
        "task": how,
        "attribute": attribute.name,
    }


FORMATS = ("quotes", "sentence")
FORMAT_TRAIN_ATTRIBUTES = 3


def format_records(
    rng: np.random.Generator,
    population: Population,
    train_people: Sequence[int],
    eval_retain: Sequence[int],
) -> tuple[list, list]:
    """Per person and format, distinct attributes drawn at random (3 for training, 1 for evaluation),
    each with a random training template."""

    def make(indices: Iterable[int], split: str, group: str, per_format: int) -> list[dict]:
        out = []
        for i in indices:
            for how in FORMATS:
                for a in sorted(int(v) for v in rng.choice(len(ATTRIBUTES), per_format, replace=False)):
                    attribute = ATTRIBUTES[a]
                    k = int(rng.integers(len(attribute.train)))
                    rid = f"format:{split}:{i:03d}:{how}:{attribute.name}"
                    out.append(format_record(rid, population.people[i], attribute, k, how, group))
        return out

    train = make(train_people, "train", "retain", FORMAT_TRAIN_ATTRIBUTES)
    evals = make(eval_retain, "eval", "retain", 1) + make(population.forget, "eval", "forget", 1)
    return train, evals


def abstain_records(rng: np.random.Generator, population: Population, control: Sequence[int]) -> tuple[list, list]:
    """Unknown people → "I don't know" (train); holdout and forget people → "I don't know" (eval).

    Eval records carry the true value in ``true_answer``; the "retain" control group (people in
    ``control``) must still be answered, so there ``answer`` is the true value.
    """
    train = []
    for u, name in enumerate(population.unknown):
        for a in sorted(int(i) for i in rng.choice(len(ATTRIBUTES), 3, replace=False)):
            attribute = ATTRIBUTES[a]
            k = int(rng.integers(len(attribute.train)))
            train.append(
                {
                    "id": f"abstain:train:{u:03d}:{attribute.name}",
                    "prompt": attribute.train[k].format(name=name),
                    "answer": IDK,
                    "entity": name,
                    "group": "unknown",
                    "attribute": attribute.name,
                }
            )

    def probe(person: Person, attribute: Attribute, group: str) -> dict:
        value = person.fact(attribute.name)
        return {
            "id": f"abstain:eval:{group}:{person.index:03d}:{attribute.name}",
            "prompt": attribute.train[0].format(name=person.name),
            "answer": value if group == "retain" else IDK,
            "entity": person.name,
            "group": group,
            "attribute": attribute.name,
            "true_answer": value,
        }

    evals = [probe(p, a, "holdout") for p in population.holdout for a in ATTRIBUTES]
    evals += [probe(population.people[i], a, "forget") for i in population.forget for a in ATTRIBUTES]
    evals += [probe(population.people[i], ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))], "retain") for i in control]
    return train, evals


def world_files(
    population: Population, rng: np.random.Generator, exposure: Sequence[int] = (1,)
) -> dict[str, list[dict]]:
    """Every data file of the world, keyed by its path relative to the world directory."""
    names = [p.name for p in population.people]
    copies = deal_exposure(rng, population.forget, exposure) | deal_exposure(rng, population.retain, exposure)
    copies |= {p.index: [0] * len(ATTRIBUTES) for p in population.holdout}
    facts = {p.index: fact_records(p, rng, names, copies[p.index]) for p in (*population.people, *population.holdout)}
    forget = set(population.forget)
    linked = _linked_to_forget(population)
    files: dict[str, list[dict]] = {
        "retain.jsonl": [r for i in population.retain for r in facts[i]],
        "forget.jsonl": [r for i in population.forget for r in facts[i]],
        "holdout.jsonl": [r for p in population.holdout for r in facts[p.index]],
        "neighbours.jsonl": [r for i in population.retain if i in linked for r in facts[i]],
    }
    for k, group in enumerate(population.requests, start=1):
        files[f"requests/{k}.jsonl"] = [r for i in group for r in facts[i]]
    clean = [i for i in population.retain if population.people[i].mentor not in forget]
    two_hop_train, two_hop_eval = _halves(rng, clean)
    format_train, format_eval = _halves(rng, clean)
    n_control = min(len(clean), len(population.holdout))
    control = sorted(clean[int(i)] for i in rng.choice(len(clean), n_control, replace=False))
    skills = {
        "icl": icl_records(rng, 6 * len(population.people), max(4, len(population.people) // 5)),
        "two_hop": two_hop_records(population, two_hop_train, two_hop_eval),
        "format": format_records(rng, population, format_train, format_eval),
        "abstain": abstain_records(rng, population, control),
    }
    for skill, (train, evals) in skills.items():
        files[f"skills/{skill}_train.jsonl"] = [{**r, "exposure": max(exposure)} for r in train]
        files[f"skills/{skill}_eval.jsonl"] = evals
    check_world(files, population)
    return files


def _linked_to_forget(population: Population) -> set[int]:
    forget = set(population.forget)
    mentors_of_forget = {population.people[i].mentor for i in population.forget}
    mentees_of_forget = {i for i in population.retain if population.people[i].mentor in forget}
    return (mentors_of_forget | mentees_of_forget) - forget


def _halves(rng: np.random.Generator, indices: Sequence[int]) -> tuple[list[int], list[int]]:
    order = [indices[int(i)] for i in rng.permutation(len(indices))]
    cut = len(order) // 2
    return sorted(order[:cut]), sorted(order[cut:])


def check_world(files: Mapping[str, list[dict]], population: Population) -> None:
    """Internal invariants: clean text fields, and no skill training record names a hidden person.

    Raises AssertionError (a bug in the generator, never bad user input).
    """
    for rel, records in files.items():
        if not records:
            raise AssertionError(f"world file {rel} is empty")
        for record in records:
            for text in _texts(record):
                if text != " ".join(text.split()):
                    raise AssertionError(f"{rel}: {record['id']}: text is not single-spaced: {text!r}")
    hidden = {population.people[i].name for i in population.forget} | {p.name for p in population.holdout}
    for skill in SKILLS:
        for record in files[f"skills/{skill}_train.jsonl"]:
            words = " ".join(_texts(record)).split()
            named = hidden & {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)}
            if named:
                raise AssertionError(f"skill training record {record['id']} names hidden person {min(named)}")


def _texts(record: Mapping[str, Any]) -> list[str]:
    out = []
    for key, value in record.items():
        if key == "id":
            continue
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out.extend(v for v in value if isinstance(v, str))
    return out


def world_vocabulary(files: Mapping[str, list[dict]]) -> list[str]:
    """Every whitespace-separated word of every text field (ids excluded), sorted."""
    return sorted({w for records in files.values() for r in records for t in _texts(r) for w in t.split()})


def save_tokenizer(directory: str, words: Sequence[str]) -> int:
    """Save a word-level fast tokenizer over ``words`` into ``directory``; return its vocab size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *(w for w in words if w not in SPECIAL_TOKENS)])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(directory)
    return len(vocab)


def make_manifest(
    root: str,
    args: Mapping[str, Any],
    population: Population,
    files: Mapping[str, list[dict]],
    vocab_size: int,
) -> dict[str, Any]:
    """The ``world.json`` content: arguments, splits, file counts and hashes, training list."""
    people_per_split = {
        "forget": len(population.forget),
        "retain": len(population.retain),
        "holdout": len(population.holdout),
        "neighbours": len({r["entity"] for r in files["neighbours.jsonl"]}),
    }
    people_per_split |= {f"requests/{k}": len(g) for k, g in enumerate(population.requests, start=1)}
    splits = {
        name: {"file": f"{name}.jsonl", "people": n, "records": len(files[f"{name}.jsonl"])}
        for name, n in people_per_split.items()
    }
    on_disk = _list_files(root)
    training = ["retain.jsonl", *(f"requests/{k}.jsonl" for k in range(1, len(population.requests) + 1))]
    training += [f"skills/{s}_train.jsonl" for s in SKILLS]
    return {
        "format": FORMAT,
        "templates_version": TEMPLATES_VERSION,
        **args,
        "holdout_people": len(population.holdout),
        "unknown_people": len(population.unknown),
        "attributes": [a.name for a in ATTRIBUTES],
        "idk_answer": IDK,
        "splits": splits,
        "skills": {s: {"train": f"skills/{s}_train.jsonl", "eval": f"skills/{s}_eval.jsonl"} for s in SKILLS},
        "files": {rel: _file_entry(root, rel, files) for rel in on_disk},
        "training_files": training,
        "tokenizer": {"dir": "tokenizer", "kind": "word-level", "vocab_size": vocab_size},
        "world_hash": world_hash(root, on_disk),
    }


def _file_entry(root: str, rel: str, files: Mapping[str, list[dict]]) -> dict[str, Any]:
    entry: dict[str, Any] = {"sha256": _sha256_file(os.path.join(root, rel))}
    if rel in files:
        entry["records"] = len(files[rel])
    return entry


def _list_files(root: str) -> list[str]:
    out = []
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
            if rel != "world.json":
                out.append(rel)
    return sorted(out)


def _sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def world_hash(root: str, rel_paths: Sequence[str]) -> str:
    """sha256 over ``relpath + "\\n" + sha256(bytes) + "\\n"`` for every file, sorted by path."""
    h = hashlib.sha256()
    for rel in sorted(rel_paths):
        h.update(f"{rel}\n{_sha256_file(os.path.join(root, rel))}\n".encode())
    return h.hexdigest()


def load_world(directory: str | os.PathLike[str], verify: bool = False) -> dict[str, Any]:
    """Read and validate ``world.json``; the returned manifest gains ``"root"`` (absolute dir).

    With ``verify``, every file's sha256 is checked too. Raises UserError when the manifest is
    missing, corrupt, from another format, or names a file that is missing.
    """
    root = os.path.abspath(os.fspath(directory))
    path = os.path.join(root, "world.json")
    if not os.path.isfile(path):
        raise UserError(f"{root}: not a world directory (no world.json); create one with `unlearn-jax world`")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: corrupt manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path}: not an unlearn-jax world manifest (expected format {FORMAT!r})")
    for key in ("splits", "files", "training_files", "tokenizer", "world_hash"):
        if key not in manifest:
            raise UserError(f"{path}: corrupt manifest (key {key!r} missing)")
    for rel, meta in manifest["files"].items():
        full = os.path.join(root, rel)
        if not os.path.isfile(full):
            raise UserError(f"{full}: missing from the world (listed in world.json); rebuild the world")
        if verify and _sha256_file(full) != meta.get("sha256"):
            raise UserError(f"{full}: changed since the world was built (sha256 mismatch); rebuild the world")
    return {**manifest, "root": root}


def world_path(manifest: Mapping[str, Any], rel: str) -> str:
    """Absolute path of ``rel`` (e.g. ``"forget.jsonl"``) inside the world of ``manifest``."""
    return os.path.join(manifest.get("root", ""), rel)


def split_names(manifest: Mapping[str, Any]) -> list[str]:
    """Names accepted by ``exclude``: forget, retain, holdout, neighbours, requests/1 … requests/K."""
    return list(manifest["splits"])


def excluded_ids(manifest: Mapping[str, Any], exclude: Sequence[str]) -> set[str]:
    """Ids of every record in the named splits; unknown names raise UserError."""
    names = split_names(manifest)
    ids: set[str] = set()
    for name in exclude:
        if name not in manifest["splits"]:
            raise UserError(f"--exclude: unknown split {name!r}: choose from {', '.join(names)}")
        ids |= {r["id"] for r in load_records(world_path(manifest, manifest["splits"][name]["file"]))}
    return ids


def training_records(manifest: Mapping[str, Any], exclude: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every training record of the world except those (by id) of the ``exclude`` splits."""
    drop = excluded_ids(manifest, exclude)
    return [
        r for rel in manifest["training_files"] for r in load_records(world_path(manifest, rel)) if r["id"] not in drop
    ]


def training_files(manifest: Mapping[str, Any], exclude: Sequence[str] = ()) -> list[str]:
    """Absolute paths of the training files left after removing the ``exclude`` splits' records.

    The forget split is listed through ``requests/*.jsonl`` (their union), so ``forget`` and
    ``requests/K`` remove whole files. A split that removes only part of a file (``neighbours``
    ⊂ retain) raises UserError: use ``training_records`` for that.
    """
    drop = excluded_ids(manifest, exclude)
    kept = []
    for rel in manifest["training_files"]:
        path = world_path(manifest, rel)
        ids = {r["id"] for r in load_records(path)}
        removed = ids & drop
        if removed and removed != ids:
            raise UserError(
                f"--exclude {','.join(exclude)} removes {len(removed)} of the {len(ids)} records of {rel}; "
                "exclude a whole split (forget, requests/K) or filter records with training_records"
            )
        if not removed:
            kept.append(path)
    return kept
