"""`unlearn-jax unlearn` end to end on the tiny world model: forgetting targets, the SGD convention from
outside, sharding, determinism, kill -9 + resume, and bad inputs."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax import UserError, load_model
from unlearn_jax.config import UnlearnConfig
from unlearn_jax.data.records import load_records, write_jsonl
from unlearn_jax.data.tokenize import encode_records
from unlearn_jax.objectives import METHODS, Hyper
from unlearn_jax.runs.unlearn import unlearn


def config(base_run, world_dir, out, **kw) -> UnlearnConfig:
    values = dict(model=str(base_run), forget=str(world_dir / "forget.jsonl"), retain=str(world_dir / "retain.jsonl"),
                  method="npo", out=str(out))
    values.update(kw)
    return UnlearnConfig(**values)


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_forgets_on_the_tiny_world(base_run, world_dir, tmp_path, method):
    run = unlearn(config(base_run, world_dir, tmp_path / method, method=method), quiet=True)
    after = run["metrics"]["after"]
    assert run["metrics"]["before"]["forget_acc"] >= 0.95
    assert after["forget_acc"] <= 0.15
    if method in ("graddiff", "npo", "rmu"):
        assert after["retain_acc"] >= 0.90
    assert (tmp_path / method / "model" / "model.safetensors").exists()
    reloaded = load_model(tmp_path / method)  # the exported model measures the same
    from unlearn_jax.evaluation.knowledge import record_stats
    forget = encode_records(load_records(str(world_dir / "forget.jsonl")), reloaded.tokenizer)
    assert record_stats(reloaded.params, reloaded.config, forget)["correct"].mean() == after["forget_acc"]


def test_sgd_one_full_batch_step_is_theta_minus_lr_grad(base_run, world_dir, tmp_path):
    records = load_records(str(world_dir / "forget.jsonl"))[:8]
    write_jsonl(tmp_path / "f.jsonl", records)
    cfg = config(base_run, world_dir, tmp_path / "sgd", method="ga", forget=str(tmp_path / "f.jsonl"),
                 retain=None, optimizer="sgd", max_grad_norm=0.0, lr=0.1, steps=1, batch_size=8, shuffle=False)
    unlearn(cfg, quiet=True)
    before, after = load_model(base_run), load_model(tmp_path / "sgd")
    data = encode_records(records, before.tokenizer)
    forget = {"answer": {k: jnp.asarray(v) for k, v in data.rows(np.arange(8)).items()}}
    grads = jax.grad(lambda p: METHODS["ga"].loss(p, before.config, {}, forget, None, Hyper(alpha=0.0))[0])(
        before.params)
    expected = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, before.params, grads)
    for a, b in zip(jax.tree_util.tree_leaves(after.params), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_sharded_run_equals_single_layout_and_is_deterministic(base_run, world_dir, tmp_path):
    kw = dict(method="npo", steps=3, optimizer="sgd", lr=0.05, batch_size=16)
    a = unlearn(config(base_run, world_dir, tmp_path / "a", mesh="data=2,fsdp=4", **kw), quiet=True)
    b = unlearn(config(base_run, world_dir, tmp_path / "b", mesh="data=8", **kw), quiet=True)
    c = unlearn(config(base_run, world_dir, tmp_path / "c", mesh="data=8", **kw), quiet=True)
    for key, value in a["metrics"]["after"].items():
        np.testing.assert_allclose(value, b["metrics"]["after"][key], rtol=1e-4)
    assert b["metrics"] == c["metrics"]  # same seed, same layout: identical
    d = unlearn(config(base_run, world_dir, tmp_path / "d", mesh="data=8", seed=1, **kw), quiet=True)
    assert d["metrics"]["after"] != c["metrics"]["after"]  # another seed draws other batches


def _cli(*args):
    return [sys.executable, "-m", "unlearn_jax.cli", "unlearn", *args]


def test_kill_9_then_resume_is_bitwise_identical(base_run, world_dir, tmp_path):
    common = ["--model", str(base_run), "--forget", str(world_dir / "forget.jsonl"), "--retain",
              str(world_dir / "retain.jsonl"), "--method", "npo", "--steps", "40", "--checkpoint-every", "5",
              "--quiet"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    subprocess.run(_cli(*common, "--out", str(tmp_path / "full")), check=True, env=env)
    victim = subprocess.Popen(_cli(*common, "--out", str(tmp_path / "killed")), env=env)
    checkpoints = tmp_path / ".killed.partial" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not (checkpoints / "10").exists():
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "run.json").exists()  # never looks complete
    subprocess.run(_cli(*common, "--out", str(tmp_path / "killed"), "--resume"), check=True, env=env)
    assert (tmp_path / "killed" / "model" / "model.safetensors").read_bytes() == \
        (tmp_path / "full" / "model" / "model.safetensors").read_bytes()
    full, resumed = (json.loads((tmp_path / n / "run.json").read_text()) for n in ("full", "killed"))
    assert full["metrics"] == resumed["metrics"]


def test_yaml_config_with_cli_override(base_run, world_dir, tmp_path):
    (tmp_path / "c.yaml").write_text(f"model: {base_run}\nforget: {world_dir / 'forget.jsonl'}\nmethod: ga\n"
                                     "steps: 2\nbatch-size: 8\n")
    from unlearn_jax.cli import main

    assert main(["unlearn", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "y"), "--steps", "3",
                 "--quiet"]) == 0
    run = json.loads((tmp_path / "y" / "run.json").read_text())
    assert run["config"]["steps"] == 3 and run["config"]["batch_size"] == 8 and run["config"]["method"] == "ga"
    (tmp_path / "bad.yaml").write_text("methd: ga\n")
    assert main(["unlearn", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "z"), "--quiet"]) == 2


def test_selective_unlearning_drops_the_least_memorized(base_run, world_dir, tmp_path):
    from unlearn_jax.cli import main

    assert main(["score", "--model", str(base_run), "--data", str(world_dir / "forget.jsonl"),
                 "--out", str(tmp_path / "scores.jsonl"), "--quiet"]) == 0
    scores = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 120 and set(scores[0]) >= {"id", "loss", "zlib", "mink", "minkpp", "mink_k04",
                                                     "minkpp_k04", "exact_match", "correct"}
    lowest = sorted(scores, key=lambda r: r["minkpp"])[:30]
    run = unlearn(config(base_run, world_dir, tmp_path / "sel", select="minkpp", drop=0.25, steps=2), quiet=True)
    selection = run["resolved"]["selection"]
    assert selection["kept"] == 90 and run["resolved"]["forget_records"] == 90
    assert [d["id"] for d in selection["dropped"]] == [r["id"] for r in lowest]
    np.testing.assert_allclose([d["minkpp"] for d in selection["dropped"]], [r["minkpp"] for r in lowest],
                               rtol=1e-5)
    assert main(["score", "--model", str(base_run), "--data", str(world_dir / "forget.jsonl"),
                 "--out", str(tmp_path / "scores.jsonl"), "--quiet"]) == 2  # never overwrites


def test_curriculum_run_records_its_order(base_run, world_dir, tmp_path):
    run = unlearn(config(base_run, world_dir, tmp_path / "cur", curriculum="confidence", stages=3, steps=6,
                         batch_size=8, rescore=True), quiet=True)
    assert run["config"]["curriculum"] == "confidence" and run["resolved"]["selection"]["score"] == "minkpp"
    assert run["metrics"]["steps"] == 6 and run["metrics"]["after"]["forget_acc"] <= 1.0


def test_stop_when_stops_early(base_run, world_dir, tmp_path):
    run = unlearn(config(base_run, world_dir, tmp_path / "s", method="ga", retain=None, steps=50,
                         stop_when="forget_acc<=0.5", eval_every=2), quiet=True)
    assert run["metrics"]["stopped_early"] and run["metrics"]["steps"] < 50
    assert run["metrics"]["after"]["forget_acc"] <= 0.5


@pytest.mark.parametrize("overrides, message", [
    (dict(method="nope"), "--method 'nope': choose one of"),
    (dict(method="npo", retain=None), "needs --retain"),
    (dict(method="rmu", rmu_layer=9), "--rmu-layer 9 is out of range"),
    (dict(method="npo", trainable="no_such_param"), "matches no parameter"),
    (dict(method="npo", mesh="data=3"), "uses 3 devices but 8"),
    (dict(method="npo", batch_size=12), "not divisible"),
    (dict(method="npo", lr=-1.0), "--lr must be positive"),
    (dict(method="npo", stop_when="acc<0.1"), "--stop-when"),
    (dict(method="npo", forget="EMPTY"), "contains no records"),
    (dict(method="npo", forget="/no/such.jsonl"), "no/such.jsonl"),
    (dict(method="npo", drop=0.2), "--drop needs --select"),
    (dict(method="npo", select="mink", drop=1.0), "--drop must be in"),
    (dict(method="npo", curriculum="confidence", stages=500), "--stages must be between"),
    (dict(method="npo", rescore=True), "--rescore needs --curriculum"),
])
def test_bad_inputs(base_run, world_dir, tmp_path, overrides, message):
    if overrides.get("forget") == "EMPTY":
        (tmp_path / "empty.jsonl").write_text("")
        overrides["forget"] = str(tmp_path / "empty.jsonl")
    with pytest.raises(UserError, match=message):
        unlearn(config(base_run, world_dir, tmp_path / "x", **overrides), quiet=True)
    assert not (tmp_path / "x").exists()
