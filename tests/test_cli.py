"""The command line: help, export, and the one-line/exit-2 error contract."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from tests.hf_models import make_hf_model
from unlearn_jax import load_model
from unlearn_jax.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unlearn_jax.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    make_hf_model("qwen2").save_pretrained(path)
    return path


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "export" in result.stdout


def test_export_round_trip(hf_dir, tmp_path):
    assert main(["export", "--model", str(hf_dir), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    a, b = load_model(hf_dir), load_model(tmp_path / "out")
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: bool(jnp.array_equal(x, y)),
                                                                a.params, b.params)))
    assert main(["export", "--model", str(hf_dir), "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16",
                 "--max-shard-size", "20000", "--quiet"]) == 0
    assert (tmp_path / "bf16" / "model.safetensors.index.json").exists()
    assert load_model(tmp_path / "bf16", param_dtype="bfloat16").params["norm"]["scale"].dtype == jnp.bfloat16


def test_export_refuses_to_overwrite(hf_dir, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("export", "--model", str(hf_dir), "--out", str(out))
    assert result.returncode == 2
    assert "already exists" in result.stderr and "Traceback" not in result.stderr
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["export", "--model", "/no/such/dir", "--out", "x"], "no such model directory"),
    (["export", "--model", "{hf}", "--out", "{tmp}/o", "--max-shard-size", "0"], "--max-shard-size"),
])
def test_export_bad_input_one_line(hf_dir, tmp_path, args, message):
    args = [a.format(hf=hf_dir, tmp=tmp_path) for a in args]
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_world_command_is_deterministic_and_refuses_to_overwrite(tmp_path):
    assert main(["world", "--out", str(tmp_path / "a"), "--people", "30", "--seed", "3", "--quiet"]) == 0
    assert main(["world", "--out", str(tmp_path / "b"), "--people", "30", "--seed", "3", "--quiet"]) == 0
    for name in ("forget.jsonl", "retain.jsonl", "world.json", "tokenizer/tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    before = (tmp_path / "a" / "world.json").read_bytes()
    assert main(["world", "--out", str(tmp_path / "a"), "--people", "30", "--seed", "4", "--quiet"]) == 2
    assert (tmp_path / "a" / "world.json").read_bytes() == before
    assert main(["world", "--out", str(tmp_path / "c"), "--people", "5", "--quiet"]) == 2
