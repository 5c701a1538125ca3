"""Evaluation metrics against hand-computed cases: truth ratio, truth score, KS forget quality, ROUGE-L,
harmonic mean, AUC and PrivLeak's sign; greedy generation against the teacher-forced correctness; the
abilities suite's classifiers on constructed answers."""

import math

import numpy as np
import pytest

from unlearn_jax import UserError, load_model
from unlearn_jax.data.records import load_records
from unlearn_jax.data.tokenize import encode_records
from unlearn_jax.evaluation import abilities, knowledge
from unlearn_jax.evaluation.generate import greedy_answers
from unlearn_jax.evaluation.mia import auc, mia_aucs, priv_leak


def test_truth_ratio_from_its_definition(monkeypatch):
    records = [{"id": "a", "prompt": "q", "answer": "x", "paraphrased_answer": "p", "perturbed_answers": ["u", "v"]},
               {"id": "b", "prompt": "q", "answer": "y", "paraphrased_answer": "p", "perturbed_answers": ["w"]}]
    nll = {"p": 0.5, "u": 1.0, "v": 2.0, "w": 0.25}  # mean token NLL of each answer text

    def fake_nll(params, config, tokenizer, recs, answer_field="answer"):
        return np.array([nll[r[answer_field]] for r in recs])

    monkeypatch.setattr(knowledge, "mean_answer_nll", fake_nll)
    ratios = knowledge.truth_ratios(None, None, None, records)
    # R = P̄_pert / P_para, P = exp(−NLL), P̄ the geometric mean over perturbed answers
    p_para = math.exp(-0.5)
    expected = [math.sqrt(math.exp(-1.0) * math.exp(-2.0)) / p_para, math.exp(-0.25) / p_para]
    np.testing.assert_allclose(ratios, expected, rtol=1e-12)
    assert knowledge.truth_score(ratios) == pytest.approx(np.mean([max(0, 1 - r) for r in expected]))
    with pytest.raises(UserError, match="record c has no paraphrased_answer"):
        knowledge.truth_ratios(None, None, None, [{"id": "c", "prompt": "q", "answer": "x"}])


def test_forget_quality_is_the_ks_p_value():
    # identical samples: p = 1; fully separated samples of 3 and 3: exact p = 2 / C(6, 3) = 0.1
    assert knowledge.forget_quality([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]) == pytest.approx(1.0)
    assert knowledge.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)


def test_rouge_l_and_harmonic_mean():
    scores = knowledge.rouge_l(["the city of Brenmoor", "nothing"], ["Brenmoor", "the red house"])
    assert scores["recall"].tolist() == [1.0, 0.0]
    assert scores["f1"][0] == pytest.approx(2 * 0.25 * 1.0 / 1.25)  # LCS 1, precision 1/4, recall 1
    assert knowledge.harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert knowledge.harmonic_mean([0.5, 0.0]) == 0.0


def test_auc_and_priv_leak_sign():
    # pairs (member, non-member): 3>1, 3>2.5, 2>1, 2<2.5 -> 3 of 4
    assert auc([3.0, 2.0], [1.0, 2.5]) == pytest.approx(0.75)
    assert priv_leak(0.8, 0.5) == pytest.approx(0.6)  # forget set still looks trained on: under-unlearning
    assert priv_leak(0.3, 0.5) == pytest.approx(-0.4)  # looks less seen than unseen data: over-unlearning


@pytest.mark.parametrize("answer, expected", [
    ("I don't know", "abstained"),
    ("i DON'T know , sorry", "abstained"),
    ("", "abstained"),
    ("Brenmoor", "leaked"),
    ("the city of Brenmoor", "leaked"),
    ("Brenmoorish", "fabricated"),
    ("Caldris", "fabricated"),
    ("Lera", "fabricated"),  # half of a two-word true value is not a leak
    ("Lera Voik", "leaked"),
])
def test_classify_answer(answer, expected):
    truth = "Lera Voik" if "Lera" in answer else "Brenmoor"
    assert abilities.classify_answer(answer, truth) == expected


@pytest.mark.parametrize("answer, task, attribute, obeyed", [
    ('" Brenmoor "', "quotes", "birth_city", True),
    ('" Lera Voik "', "quotes", "mentor", True),
    ('Brenmoor', "quotes", "birth_city", False),
    ('" Brenmoor', "quotes", "birth_city", False),
    ('" " "', "quotes", "birth_city", False),
    ("Ada Vo was born in Caldris .", "sentence", "birth_city", True),  # wrong value, right shape
    ("Ada Vo was born in Caldris", "sentence", "birth_city", False),
    ("Ada Vo was born in the year 1950 .", "sentence", "birth_city", False),
    ("Ada Vo was born in the year 1950 .", "sentence", "birth_year", True),
    ("Ada Vo was mentored by Lera Voik .", "sentence", "mentor", True),
    ("Ada was mentored by Lera Voik .", "sentence", "mentor", False),
])
def test_format_obeyed_is_a_strict_shape_check(answer, task, attribute, obeyed):
    assert abilities.format_obeyed(answer, {"task": task, "attribute": attribute}) is obeyed


def test_ability_metrics_on_constructed_answers():
    icl = [{"shots": 0, "answer": "3"}, {"shots": 2, "answer": "3"}, {"shots": 2, "answer": "5"},
           {"shots": 4, "answer": "1"}]
    out = abilities.icl_metrics(icl, ["3", "3", "4", "1"])
    assert out["by_shots"] == {"0": 1.0, "2": 0.5, "4": 1.0} and out["acc"] == pytest.approx(2 / 3)

    hop = [{"group": "retain", "answer": "A B ; Caldris"}, {"group": "retain", "answer": "C D ; Drovik"},
           {"group": "forget", "forgotten_hop": 1, "answer": "E F ; Istrel"},
           {"group": "forget", "forgotten_hop": 2, "answer": "G H ; Faroth"}]
    out = abilities.two_hop_metrics(hop, ["A B ; Caldris", "C D ; Faroth", "X Y ; Istrel", "G H ; Faroth"])
    assert out["retain"] == {"acc": 0.5, "first_hop_acc": 1.0, "records": 2}
    assert out["forget"]["acc"] == 0.5 and out["forget_hop1"]["first_hop_acc"] == 0.0
    assert out["forget_hop2"]["acc"] == 1.0

    hall = [{"group": g, "true_answer": "Brenmoor"} for g in ("holdout", "holdout", "forget", "forget", "forget")]
    hall += [{"group": "retain", "true_answer": "baker"}] * 2
    out = abilities.hallucination_metrics(hall, ["I don't know", "Caldris", "Brenmoor", "Drovik", "",
                                                 "baker", "I don't know"])
    assert out["holdout"] == {"fabricated": 0.5, "abstained": 0.5, "leaked": 0.0, "records": 2}
    assert out["forget"]["leaked"] == pytest.approx(1 / 3) and out["forget"]["abstained"] == pytest.approx(1 / 3)
    assert out["control"] == {"answered": 0.5, "records": 2}


def test_greedy_generation_agrees_with_teacher_forced_correctness(base_run, world_dir):
    lm = load_model(base_run)
    records = load_records(str(world_dir / "forget.jsonl"))[:12] + load_records(str(world_dir / "holdout.jsonl"))[:12]
    generated = greedy_answers(lm.params, lm.config, lm.tokenizer, records, batch_size=5)
    stats = knowledge.record_stats(lm.params, lm.config, encode_records(records, lm.tokenizer))
    assert [g == r["answer"] for g, r in zip(generated, records, strict=True)] == stats["correct"].tolist()


def test_mia_separates_trained_from_unseen(base_run, world_dir):
    lm = load_model(base_run)
    members = load_records(str(world_dir / "forget.jsonl"))[:40]
    nonmembers = load_records(str(world_dir / "holdout.jsonl"))[:40]
    aucs = mia_aucs(lm.params, lm.config, lm.tokenizer, members, nonmembers)
    assert set(aucs) == {"loss", "zlib", "mink", "minkpp"} and aucs["loss"] > 0.9
    swapped = mia_aucs(lm.params, lm.config, lm.tokenizer, nonmembers, members)
    assert swapped["loss"] == pytest.approx(1 - aucs["loss"])


def test_eval_command_on_the_world(base_run, gold_run, world_dir, tmp_path):
    import json

    from unlearn_jax.cli import main

    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(gold_run), "--world", str(world_dir), "--retrained", str(gold_run),
                 "--original", str(base_run), "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["suites"] == ["knowledge", "mia", "abilities"]
    table = {row["key"]: row for row in result["abilities"]["table"]}
    assert set(table) == {key for key, _, _ in abilities.HEADLINE}
    for row in table.values():
        assert 0 <= row["original"] <= 1 and row["model"] == row["retrained"]  # gold against itself
        assert row["change"] == pytest.approx(row["model"] - row["original"])
    assert table["forget_leaked"]["original"] >= 0.9 and table["forget_leaked"]["retrained"] <= 0.15
    assert table["two_hop_forget"]["retrained"] < table["two_hop_forget"]["original"]
    assert table["format_obeyed"]["original"] >= 0.8 and table["control_answered"]["original"] >= 0.9
    knowledge_ = result["knowledge"]
    assert set(knowledge_) >= {"forget", "retain", "neighbours", "holdout", "requests/1", "requests/3",
                               "model_utility", "forget_quality"}
    assert sum(knowledge_[f"requests/{k}"]["records"] for k in (1, 2, 3)) == knowledge_["forget"]["records"]
    assert knowledge_["forget_quality"] == pytest.approx(1.0)  # the gold model against itself
    assert knowledge_["retain"]["acc"] >= 0.95 and knowledge_["forget"]["acc"] <= 0.15
    for split in ("forget", "retain", "neighbours", "holdout"):
        for key in ("acc", "prob", "rouge_l_recall", "rouge_l_f1", "truth", "paraphrase_acc"):
            assert 0 <= knowledge_[split][key] <= 1, (split, key)
    assert 0 < knowledge_["model_utility"] <= 1
    assert result["mia"]["priv_leak"] == {a: 0.0 for a in ("loss", "zlib", "mink", "minkpp")}

    assert main(["eval", "--model", str(base_run), "--world", str(world_dir), "--retrained", str(gold_run),
                 "--out", str(out), "--force", "--suite", "mia", "--quiet"]) == 0
    leak = json.loads(out.read_text())["mia"]["priv_leak"]
    assert leak["loss"] > 0.2  # the base model still holds the forget set: under-unlearning


@pytest.mark.parametrize("args, message", [
    (["--suite", "abilities,bogus"], "--suite: unknown suite 'bogus'"),
    (["--suite", "abilities", "--data", "x.jsonl"], "--suite abilities needs --world DIR"),
    (["--suite", "knowledge"], "eval needs --world DIR"),
    (["--suite", "mia", "--data", "x.jsonl"], "--suite mia needs --world DIR"),
])
def test_eval_bad_inputs(base_run, tmp_path, capsys, args, message):
    from unlearn_jax.cli import main

    assert main(["eval", "--model", str(base_run), "--out", str(tmp_path / "e.json"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e.json").exists()
