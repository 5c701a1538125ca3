"""`unlearn-jax sequential`: requests in order with the forget matrix, rebound, the gold reference,
kill -9 + resume (bitwise identical), determinism, and bad inputs."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from unlearn_jax.runs.sequential import rebound


def _cli(*args):
    return [sys.executable, "-m", "unlearn_jax.cli", "sequential", *args]


def common(base_run, world_dir, *extra):
    return ["--model", str(base_run), "--requests", str(world_dir / "requests" / "1.jsonl"),
            str(world_dir / "requests" / "2.jsonl"), "--retain", str(world_dir / "retain.jsonl"), "--method", "npo",
            "--steps", "12", "--checkpoint-every", "3", "--quiet", *extra]


def test_sequential_matrix_gold_and_resume(base_run, gold_run, world_dir, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    args = common(base_run, world_dir, "--retrained", str(gold_run), str(gold_run))
    subprocess.run(_cli(*args, "--out", str(tmp_path / "full")), check=True, env=env)
    result = json.loads((tmp_path / "full" / "sequential.json").read_text())
    assert [len(r["forget_acc"]) for r in result["after"]] == [2, 2, 2]
    assert result["after"][0]["forget_acc"] == [1.0, 1.0]  # the base model knows both requests
    assert result["after"][1]["forget_acc"][0] < 0.5  # request 1 forgotten after request 1
    assert result["after"][2]["forget_acc"][1] < 0.5
    assert len(result["gold"]) == 2 and all(max(g["forget_acc"]) <= 0.2 for g in result["gold"])
    assert [r["request"] for r in result["rebound"]] == [1]
    for name in ("heatmap.png", "report.md", "request_1/run.json", "request_2/run.json", "model/config.json"):
        assert (tmp_path / "full" / name).exists(), name
    assert "forget_correct" not in (tmp_path / "full" / "sequential.json").read_text()
    assert (tmp_path / "full" / "model" / "model.safetensors").read_bytes() == \
        (tmp_path / "full" / "request_2" / "model" / "model.safetensors").read_bytes()

    victim = subprocess.Popen(_cli(*args, "--out", str(tmp_path / "killed")), env=env)
    checkpoint = tmp_path / ".killed.partial" / ".request_2.partial" / "checkpoints" / "6"
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoint.exists():
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert checkpoint.exists() and not (tmp_path / "killed").exists()  # never looks complete
    subprocess.run(_cli(*args, "--out", str(tmp_path / "killed"), "--resume"), check=True, env=env)
    assert (tmp_path / "killed" / "model" / "model.safetensors").read_bytes() == \
        (tmp_path / "full" / "model" / "model.safetensors").read_bytes()
    assert json.loads((tmp_path / "killed" / "sequential.json").read_text()) == result


def test_rebound_flags_a_returning_target():
    rows = [{"forget_acc": [1.0, 1.0], "forget_correct": [[True] * 40, [True] * 40]},
            {"forget_acc": [0.0, 1.0], "forget_correct": [[False] * 40, [True] * 40]},
            {"forget_acc": [0.5, 0.0], "forget_correct": [[True] * 20 + [False] * 20, [False] * 40]}]
    (entry,) = rebound(rows)
    assert entry["request"] == 1 and entry["rebound"] == pytest.approx(0.5) and entry["rebounded"]
    rows[2]["forget_correct"][0] = [True] + [False] * 39
    rows[2]["forget_acc"][0] = 1 / 40
    assert not rebound(rows)[0]["rebounded"]
    assert np.isclose(rebound(rows)[0]["max_later"], 1 / 40)


@pytest.mark.parametrize("extra, message", [
    (["--requests"], "--requests"),
    (["--retrained", "x"], "--retrained: give one gold model per request prefix (2), got 1"),
    (["--requests", "EMPTY"], "EMPTY"),
])
def test_bad_inputs(base_run, world_dir, tmp_path, extra, message):
    (tmp_path / "empty.jsonl").write_text("")
    args = common(base_run, world_dir)
    if extra[0] == "--requests":
        i = args.index("--requests")
        del args[i:i + 3]
        extra = [e.replace("EMPTY", str(tmp_path / "empty.jsonl")) for e in extra]
        message = message.replace("EMPTY", str(tmp_path / "empty.jsonl"))
    result = subprocess.run(_cli(*args, *extra, "--out", str(tmp_path / "o")), capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
