"""The embedded world: determinism, splits, record validity, tokenizer round trips, manifest."""

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from unlearn_jax.data import world as w
from unlearn_jax.data.records import load_records
from unlearn_jax.errors import UserError

TEXT_FIELDS = ("prompt", "answer", "paraphrased_prompt", "paraphrased_answer", "idk_answer", "true_answer")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "w"
    manifest = w.build_world(root, seed=0)
    data = {rel: load_records(str(root / rel)) for rel, meta in manifest["files"].items() if "records" in meta}
    tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
    return root, manifest, data, tokenizer


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _people(records):
    return {r["entity"] for r in records}


def _texts(record):
    return [record[k] for k in TEXT_FIELDS if k in record] + record.get("perturbed_answers", [])


def test_same_seed_gives_byte_identical_files(tmp_path, world):
    root, manifest, _, _ = world
    again = w.build_world(tmp_path / "again", seed=0)
    assert _tree(tmp_path / "again") == _tree(root)
    assert again == json.loads((root / "world.json").read_text(encoding="utf-8"))
    other = w.build_world(tmp_path / "other", seed=1)
    assert other["world_hash"] != manifest["world_hash"]
    assert _tree(tmp_path / "other")["forget.jsonl"] != _tree(root)["forget.jsonl"]


def test_manifest_describes_the_files(world):
    root, manifest, data, _ = world
    assert manifest["seed"] == 0 and manifest["people"] == 100 and manifest["requests"] == 3
    assert manifest["templates_version"] == w.TEMPLATES_VERSION
    assert set(manifest["files"]) == {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {"world.json"}
    for rel, records in data.items():
        assert manifest["files"][rel]["records"] == len(records)
    assert manifest["world_hash"] == w.world_hash(str(root), list(manifest["files"]))
    assert manifest["splits"]["forget"] == {"file": "forget.jsonl", "people": 10, "records": 120}
    assert manifest["splits"]["retain"]["people"] == 90
    assert manifest["tokenizer"]["vocab_size"] < 1000
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]


def test_splits_are_disjoint_and_requests_partition_forget(world):
    _, manifest, data, _ = world
    forget, retain, holdout = (_people(data[f"{s}.jsonl"]) for s in ("forget", "retain", "holdout"))
    assert len(forget) == 10 and len(retain) == 90 and len(holdout) == 20
    assert not (forget & retain) and not (forget & holdout) and not (retain & holdout)
    requests = [data[f"requests/{k}.jsonl"] for k in range(1, 4)]
    request_ids = [{r["id"] for r in req} for req in requests]
    assert sum(len(ids) for ids in request_ids) == len(data["forget.jsonl"])
    assert set().union(*request_ids) == {r["id"] for r in data["forget.jsonl"]}
    assert all(len(_people(req)) >= 1 for req in requests)
    assert sorted(r["id"] for req in requests for r in req) == sorted(r["id"] for r in data["forget.jsonl"])
    by_id = {r["id"]: r for r in data["forget.jsonl"]}
    assert all(by_id[r["id"]] == r for req in requests for r in req)


def test_neighbours_are_retain_records_linked_to_forget_people(world):
    _, _, data, _ = world
    forget = _people(data["forget.jsonl"])
    retain_by_id = {r["id"]: r for r in data["retain.jsonl"]}
    neighbours = data["neighbours.jsonl"]
    assert neighbours and all(retain_by_id[r["id"]] == r for r in neighbours)
    mentor = {
        r["entity"]: r["answer"] for f in ("retain.jsonl", "forget.jsonl") for r in data[f] if r["group"] == "mentor"
    }
    linked = {p for p, m in mentor.items() if m in forget and p not in forget} | {mentor[f] for f in forget}
    assert _people(neighbours) == linked
    assert all(mentor[f] in _people(neighbours) for f in forget)


def test_fact_records_have_the_promised_shape(world):
    _, _, data, _ = world
    facts = data["retain.jsonl"] + data["forget.jsonl"] + data["holdout.jsonl"]
    assert len(facts) == 120 * len(w.ATTRIBUTES) * 2
    trained_prompts = {r["prompt"] for r in facts}
    for r in facts:
        person, attribute, template = r["id"].split(":")[1:]
        assert attribute == r["group"] and template in ("t0", "t1")
        phrase = w.ATTRIBUTE_BY_NAME[attribute].phrase
        assert r["paraphrased_answer"] == phrase.format(value=r["answer"])
        assert len(set(r["perturbed_answers"])) == len(r["perturbed_answers"]) >= 3
        assert r["paraphrased_answer"] not in r["perturbed_answers"]
        assert all(p.startswith(phrase.split("{value}")[0]) for p in r["perturbed_answers"])
        assert r["paraphrased_prompt"] not in trained_prompts
        assert r["idk_answer"] == w.IDK
    assert {r["answer"] for r in facts if r["group"] == "birth_year"} <= set(w.YEARS)


def test_every_file_validates_and_every_text_round_trips(world):
    _, manifest, data, tokenizer = world
    unk = tokenizer.unk_token_id
    for rel, records in data.items():
        assert load_records(str(world[0] / rel)) == records
        for r in records:
            for text in _texts(r):
                ids = tokenizer.encode(text, add_special_tokens=False)
                assert unk not in ids, (rel, text)
                assert tokenizer.decode(ids) == text, (rel, text)
            if "prompt" in r:
                whole = tokenizer.encode(r["prompt"] + " " + r["answer"], add_special_tokens=False)
                parts = tokenizer.encode(r["prompt"], add_special_tokens=False)
                parts += tokenizer.encode(r["answer"], add_special_tokens=False)
                assert whole == parts
                assert len(parts) + 2 < 48, r["id"]
    assert len(tokenizer) == manifest["tokenizer"]["vocab_size"]


def test_tokenizer_specials_and_word_level_split(world):
    _, _, _, tokenizer = world
    assert tokenizer.convert_ids_to_tokens(list(range(4))) == list(w.SPECIAL_TOKENS)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    assert tokenizer.tokenize("I don't know") == ["I", "don't", "know"]
    ids = tokenizer.encode("I don't know")
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 4
    assert tokenizer.encode("Zzyzx", add_special_tokens=False) == [tokenizer.unk_token_id]


def test_skill_training_never_names_forget_or_holdout_people(world):
    _, manifest, data, _ = world
    hidden = _people(data["forget.jsonl"]) | _people(data["holdout.jsonl"])
    for skill in w.SKILLS:
        for r in data[f"skills/{skill}_train.jsonl"]:
            text = " " + " ".join(_texts(r)) + " "
            assert r.get("entity") not in hidden
            assert not [name for name in hidden if f" {name} " in text], r["id"]
    trained = [rel for rel in manifest["training_files"] if rel.startswith("skills/")]
    assert trained == [f"skills/{s}_train.jsonl" for s in w.SKILLS]


def test_skill_files(world):
    _, _, data, _ = world
    forget = _people(data["forget.jsonl"])
    holdout = _people(data["holdout.jsonl"])
    facts = {
        (r["entity"], r["group"]): r["answer"]
        for f in ("retain.jsonl", "forget.jsonl", "holdout.jsonl")
        for r in data[f]
    }
    icl_train, icl_eval = data["skills/icl_train.jsonl"], data["skills/icl_eval.jsonl"]
    assert {r["shots"] for r in icl_eval} == {0, 1, 2, 3, 4}
    assert not {r["prompt"] for r in icl_eval} & {r["prompt"] for r in icl_train}
    for r in icl_train + icl_eval:
        pairs = dict(p.split(" ") for p in r["prompt"].removeprefix("Code: ").split(" ; ")[:-1])
        if r["shots"]:
            assert pairs[r["prompt"].split(" ; ")[-1]] == r["answer"]
    for rel in ("skills/two_hop_train.jsonl", "skills/two_hop_eval.jsonl"):
        for r in data[rel]:
            mentor, value = r["answer"].split(" ; ")
            assert facts[(r["entity"], "mentor")] == mentor and facts[(mentor, r["task"])] == value
    two_hop_eval = data["skills/two_hop_eval.jsonl"]
    assert {r["forgotten_hop"] for r in two_hop_eval if r["group"] == "forget"} == {1, 2}
    assert not _people(data["skills/two_hop_train.jsonl"]) & _people(two_hop_eval)
    format_eval = data["skills/format_eval.jsonl"]
    assert _people(r for r in format_eval if r["group"] == "forget") == forget
    for r in data["skills/format_train.jsonl"] + format_eval:
        value = facts[(r["entity"], r["attribute"])]
        assert r["answer"] == f'" {value} "' if r["task"] == "quotes" else r["answer"].endswith(f" {value} .")
    abstain_train, abstain_eval = data["skills/abstain_train.jsonl"], data["skills/abstain_eval.jsonl"]
    assert {r["answer"] for r in abstain_train} == {w.IDK}
    assert not _people(abstain_train) & {e for e, _ in facts}
    groups = {g: [r for r in abstain_eval if r["group"] == g] for g in ("holdout", "forget", "retain")}
    assert _people(groups["holdout"]) == holdout and _people(groups["forget"]) == forget
    assert all(r["answer"] == w.IDK for r in groups["holdout"] + groups["forget"])
    assert all(r["true_answer"] == facts[(r["entity"], r["attribute"])] for r in abstain_eval)
    assert all(r["answer"] == r["true_answer"] for r in groups["retain"])


def test_world_is_small(world):
    _, manifest, data, _ = world
    training = sum(manifest["files"][rel]["records"] for rel in manifest["training_files"])
    assert 2000 <= training <= 2400  # 1200 facts + skills; the base model trains on it in about a minute


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"people": 9}, "--people"),
        ({"people": 2001}, "--people"),
        ({"people": 10.5}, "--people must be an integer"),
        ({"forget_frac": 0}, "--forget-frac"),
        ({"forget_frac": 0.6}, "--forget-frac"),
        ({"forget_frac": float("nan")}, "--forget-frac"),
        ({"requests": 0}, "--requests"),
        ({"requests": 11}, r"--requests must be between 1 and the number of forget people \(10\)"),
        ({"seed": -1}, "--seed"),
        ({"exposure": ()}, "--exposure"),
        ({"exposure": (4, 0)}, "--exposure levels must be between 1 and 64"),
        ({"exposure": (65,)}, "--exposure levels"),
        ({"exposure": (2.5,)}, "--exposure must be a comma-separated list of integers"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        w.build_world(tmp_path / "w", **kwargs)
    assert not os.listdir(tmp_path)


def test_exposure_levels_are_dealt_in_equal_shares(tmp_path, world):
    _, manifest, data, _ = world
    assert manifest["exposure"] == [1]
    assert {r["exposure"] for rel, records in data.items() if rel != "holdout.jsonl" and "eval" not in rel
            for r in records} == {1}

    manifest = w.build_world(tmp_path / "w", seed=0, exposure=(8, 4, 2, 1))
    assert manifest["exposure"] == [8, 4, 2, 1]
    for split in ("forget", "retain"):
        records = load_records(str(tmp_path / "w" / f"{split}.jsonl"))
        per_fact = {}
        for r in records:  # both templates of a fact share its exposure
            per_fact.setdefault(r["id"].rsplit(":", 1)[0], set()).add(r["exposure"])
        assert all(len(v) == 1 for v in per_fact.values())
        counts = Counter(v.pop() for v in per_fact.values())
        assert set(counts) == {8, 4, 2, 1} and max(counts.values()) - min(counts.values()) <= 1, counts
    assert {r["exposure"] for r in load_records(str(tmp_path / "w" / "holdout.jsonl"))} == {0}
    assert {r["exposure"] for r in load_records(str(tmp_path / "w" / "skills" / "icl_train.jsonl"))} == {8}
    assert w.parse_exposure("8,4,2,1") == (8, 4, 2, 1)
    with pytest.raises(UserError, match="--exposure must be a comma-separated list of integers, got '8,x'"):
        w.parse_exposure("8,x")


def test_out_dir_rules(tmp_path):
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="not empty.*--force"):
        w.build_world(out, people=10, requests=1)
    assert (out / "keep.txt").exists()
    manifest = w.build_world(out, people=10, forget_frac=0.5, requests=5, force=True)
    assert not (out / "keep.txt").exists() and (out / "world.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["w"]
    assert manifest["splits"]["forget"]["people"] == 5
    assert all(manifest["splits"][f"requests/{k}"]["people"] == 1 for k in range(1, 6))
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="not a directory"):
        w.build_world(tmp_path / "file", force=True)


def test_small_extreme_world_is_complete(tmp_path):
    manifest = w.build_world(tmp_path / "w", seed=3, people=10, forget_frac=0.5, requests=1)
    for rel, meta in manifest["files"].items():
        if "records" in meta:
            assert meta["records"] > 0, rel
            load_records(str(tmp_path / "w" / rel))


def test_load_world(tmp_path, world):
    root, manifest, _, _ = world
    loaded = w.load_world(root, verify=True)
    assert loaded["root"] == str(root) and loaded["world_hash"] == manifest["world_hash"]
    with pytest.raises(UserError, match="no world.json"):
        w.load_world(tmp_path)
    (tmp_path / "world.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="corrupt manifest"):
        w.load_world(tmp_path)
    (tmp_path / "world.json").write_text(json.dumps({"format": "other"}), encoding="utf-8")
    with pytest.raises(UserError, match="not an unlearn-jax world"):
        w.load_world(tmp_path)
    broken = {**manifest, "files": {"gone.jsonl": {"sha256": "0"}}}
    (tmp_path / "world.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(UserError, match="gone.jsonl: missing from the world"):
        w.load_world(tmp_path)


def test_training_files_and_exclusions(world):
    root, _, data, _ = world
    manifest = w.load_world(root)
    everything = w.training_records(manifest)
    ids = {r["id"] for r in everything}
    assert {r["id"] for r in data["forget.jsonl"]} <= ids and {r["id"] for r in data["retain.jsonl"]} <= ids
    assert not {r["id"] for r in data["holdout.jsonl"]} & ids
    gold = w.training_files(manifest, ["forget"])
    assert gold == [str(root / rel) for rel in manifest["training_files"] if not rel.startswith("requests/")]
    assert str(root / "requests/2.jsonl") not in w.training_files(manifest, ["requests/2"])
    assert str(root / "requests/1.jsonl") in w.training_files(manifest, ["requests/2"])
    kept = {r["id"] for r in w.training_records(manifest, ["requests/2", "neighbours"])}
    assert kept == ids - {r["id"] for r in data["requests/2.jsonl"] + data["neighbours.jsonl"]}
    assert w.training_files(manifest, ["holdout"]) == w.training_files(manifest)
    with pytest.raises(UserError, match="removes 204 of the 1080 records of retain.jsonl"):
        w.training_files(manifest, ["neighbours"])
    with pytest.raises(UserError, match="unknown split 'requests/9'"):
        w.training_files(manifest, ["requests/9"])
