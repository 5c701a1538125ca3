"""Pretraining on the embedded world: accuracy targets, the run directory, caching, HF loading."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from unlearn_jax import load_model
from unlearn_jax.runs.pretrain import pretrain

TARGET = 0.95


def run_json(run):
    return json.loads((run / "run.json").read_text())


def test_base_model_memorizes_the_world(base_run):
    accuracy = run_json(base_run)["metrics"]["accuracy"]
    assert accuracy["forget"]["acc"] >= TARGET
    assert accuracy["retain"]["acc"] >= TARGET
    assert accuracy["holdout"]["acc"] <= 0.15  # never trained on: guessing from shared value pools


def test_gold_model_never_learned_the_forget_split(gold_run):
    accuracy = run_json(gold_run)["metrics"]["accuracy"]
    assert accuracy["retain"]["acc"] >= TARGET
    assert accuracy["forget"]["acc"] <= 0.15
    assert run_json(gold_run)["config"]["exclude"] == ["forget"]


def test_run_directory_layout(base_run):
    run = run_json(base_run)
    assert {p.name for p in base_run.iterdir()} >= {"model", "run.json", "metrics.jsonl", "checkpoints"}
    assert run["model"]["num_params"] < 1.5e6 and run["model"]["num_layers"] == 4
    assert run["timings"]["wall_s"] > 0 and run["versions"]["jax"]
    steps = [json.loads(line)["step"] for line in (base_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, run["config"]["steps"] + 1))
    assert run["metrics"]["loss_curve"][-1][1] < run["metrics"]["loss_curve"][0][1] / 5


def test_saved_model_loads_in_transformers_with_same_logits(base_run):
    lm = load_model(base_run)
    model = transformers.AutoModelForCausalLM.from_pretrained(base_run / "model").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_run / "model")
    ids = tokenizer(["Where was", "Answer in capital letters."], padding=True, return_tensors="np")
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids["input_ids"]), attention_mask=torch.tensor(ids["attention_mask"]))
    valid = ids["attention_mask"].astype(bool)
    ours = np.asarray(lm.logits(ids["input_ids"], ids["attention_mask"]))
    np.testing.assert_allclose(ours[valid], ref.logits.numpy()[valid], atol=1e-4, rtol=1e-4)


def test_cache_hit_copies_the_same_run(base_run, world_dir, tmp_path):
    again = pretrain(str(world_dir), str(tmp_path / "again"), quiet=True)
    assert again["metrics"] == run_json(base_run)["metrics"]
    assert (tmp_path / "again" / "model" / "model.safetensors").read_bytes() == \
        (base_run / "model" / "model.safetensors").read_bytes()


def test_existing_output_is_protected(base_run, world_dir):
    result = subprocess.run([sys.executable, "-m", "unlearn_jax.cli", "pretrain", "--data", str(world_dir),
                             "--out", str(base_run)], capture_output=True, text=True)
    assert result.returncode == 2 and "already exists" in result.stderr


@pytest.mark.parametrize("kwargs, message", [
    (dict(preset="huge"), "--preset 'huge'"),
    (dict(exclude=("bogus",)), "bogus"),
    (dict(steps=0), "--steps must be >= 1"),
])
def test_bad_arguments(world_dir, tmp_path, kwargs, message):
    from unlearn_jax import UserError

    with pytest.raises(UserError, match=message):
        pretrain(str(world_dir), str(tmp_path / "x"), quiet=True, use_cache=False, **kwargs)


def test_missing_world_is_a_clear_error(tmp_path):
    from unlearn_jax import UserError

    with pytest.raises(UserError, match="not a world directory"):
        pretrain(str(tmp_path), str(tmp_path / "x"), quiet=True)


def test_records_are_repeated_by_their_exposure(tmp_path):
    from unlearn_jax.data.world import build_world, load_world, training_records

    build_world(tmp_path / "w", seed=0, people=10, requests=1, exposure=(4, 1))
    records = training_records(load_world(tmp_path / "w"))
    run = pretrain(str(tmp_path / "w"), str(tmp_path / "run"), steps=2, quiet=True, use_cache=False)
    assert run["data"]["train_records"] == len(records)
    assert run["data"]["records_per_epoch"] == sum(r["exposure"] for r in records) > len(records)
