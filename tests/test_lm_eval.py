"""The lm-eval adapter against lm-eval's own ``hf`` model on the same checkpoints: request by request
(loglikelihood, rolling loglikelihood, greedy generation) and through whole local tasks
(``tests/lm_eval_tasks``: multiple choice, generation, perplexity over JSONL fixtures)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import transformers

pytest.importorskip("lm_eval")
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from tests.hf_models import make_hf_model  # noqa: E402
from unlearn_jax.evaluation.lm_eval_adapter import UnlearnJaxLM, bucket_width  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "tests" / "lm_eval_tasks"
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def random_hf_dir(world_dir, tmp_path_factory):
    """A tiny random Llama (transformers, PyTorch) with the world's tokenizer, saved as an HF directory."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(world_dir / "tokenizer")
    model = make_hf_model("llama", vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out = tmp_path_factory.mktemp("hf") / "random_llama"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pair(random_hf_dir):
    """(ours, lm-eval's hf) on the random model, both with a 64-token context so windows roll."""
    ours = UnlearnJaxLM(pretrained=str(random_hf_dir), batch_size=4, max_length=MAX_LENGTH)
    theirs = HFLM(pretrained=str(random_hf_dir), device="cpu", dtype="float32", batch_size=4, max_length=MAX_LENGTH)
    return ours, theirs


def _requests(kind, args):
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def test_bucket_widths():
    assert [bucket_width(n) for n in (1, 8, 9, 16, 17, 100)] == [8, 8, 16, 16, 32, 128]


def test_loglikelihood_equals_lm_eval_hf(pair):
    ours, theirs = pair
    words = "Where was Sasha Branane born ? Brenmoor Caldris the city of".split()
    long_context = " ".join(words[i % len(words)] for i in range(90))  # longer than the context: left-truncated
    args = [("Where was Sasha Branane born?", " Brenmoor"), ("Where was Sasha Branane born? ", "Brenmoor Caldris"),
            ("", "Where was Sasha Branane born?"), (long_context, " the city of Brenmoor"),
            ("What job does Risha Toris have?", " baker")]
    got = ours.loglikelihood(_requests("loglikelihood", args))
    want = theirs.loglikelihood(_requests("loglikelihood", args))
    np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], rtol=1e-5, atol=1e-4)
    assert [g[1] for g in got] == [w[1] for w in want]


def test_greedy_flag_is_true_for_the_models_own_continuation(pair):
    ours, _ = pair
    context = "Where was Sasha Branane born?"
    generated = ours.generate_until(_requests("generate_until", [(context, {"until": ["?"], "max_gen_toks": 3})]))
    (logprob, greedy), = ours.loglikelihood(_requests("loglikelihood", [(context, " " + generated[0])]))
    assert greedy and logprob < 0


def test_rolling_loglikelihood_equals_lm_eval_hf(pair):
    ours, theirs = pair
    texts = [(line,) for line in (json.loads(x)["text"] for x in (TASKS / "world_text.jsonl").read_text().splitlines())]
    assert max(len(ours.tok_encode(t)) for (t,) in texts) > 2 * MAX_LENGTH  # several windows
    got = ours.loglikelihood_rolling(_requests("loglikelihood_rolling", texts))
    want = theirs.loglikelihood_rolling(_requests("loglikelihood_rolling", texts))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_generate_until_equals_lm_eval_hf(pair):
    ours, theirs = pair
    args = [("Where was Sasha Branane born?", {"until": ["?"], "max_gen_toks": 6, "do_sample": False}),
            ("What job does Risha Toris have?", {"until": ["?"], "max_gen_toks": 6, "do_sample": False}),
            ("Code: red 7 ; blue 3 ; blue", {"until": [";"], "max_gen_toks": 10})]
    assert ours.generate_until(_requests("generate_until", args)) == theirs.generate_until(
        _requests("generate_until", args))
    with pytest.raises(ValueError, match="greedily only"):
        ours.generate_until(_requests("generate_until", [("x", {"do_sample": True, "temperature": 0.7})]))


@pytest.fixture(scope="module")
def task_manager():
    return TaskManager(include_path=str(TASKS), include_defaults=False)


def _metrics(results):
    return {task: {k: v for k, v in m.items() if isinstance(v, float) and "stderr" not in k}
            for task, m in results["results"].items()}


def test_local_tasks_give_the_same_numbers_as_lm_eval_hf(base_run, task_manager, monkeypatch):
    monkeypatch.chdir(REPO)  # the task YAMLs name their JSONL files relative to the repository
    model_dir = str(base_run / "model")
    tasks = ["world_mc", "world_gen", "world_text"]
    ours = simple_evaluate(model=UnlearnJaxLM(pretrained=model_dir, batch_size=8), tasks=tasks,
                           task_manager=task_manager, bootstrap_iters=0, log_samples=False)
    theirs = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32,device=cpu",
                             tasks=tasks, task_manager=task_manager, batch_size=8, bootstrap_iters=0,
                             log_samples=False)
    got, want = _metrics(ours), _metrics(theirs)
    assert got.keys() == want.keys() == set(tasks)
    for task in tasks:
        assert got[task].keys() == want[task].keys()
        for metric in got[task]:
            assert got[task][metric] == pytest.approx(want[task][metric], rel=1e-4), (task, metric)
    assert got["world_mc"]["acc,none"] == 1.0 and got["world_gen"]["exact_match,none"] == 1.0  # trained facts


def test_command_line_wrapper_runs_lm_eval_with_our_model(base_run, tmp_path):
    out = tmp_path / "lm_eval_out"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "unlearn_jax.lm_eval", "--model", "unlearn_jax",
         "--model_args", f"pretrained={base_run / 'model'}", "--tasks", "world_mc",
         "--include_path", str(TASKS), "--output_path", str(out), "--log_samples", "--batch_size", "4"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in out.rglob("results_*.json")]
    assert results and results[0]["results"]["world_mc"]["acc,none"] == 1.0
    assert list(out.rglob("samples_world_mc_*.jsonl"))


def test_eval_command_runs_lm_eval_tasks_on_every_model(base_run, gold_run, tmp_path, monkeypatch):
    from unlearn_jax.cli import main

    monkeypatch.chdir(REPO)
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(base_run), "--original", str(gold_run), "--lm-eval-tasks", "world_mc,world_gen",
                 "--lm-eval-include-path", str(TASKS), "--lm-eval-limit", "4", "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["suites"] == [] and set(result["lm_eval"]) == {"model", "original", "table"}
    assert result["lm_eval"]["model"]["world_mc"]["acc,none"] == 1.0
    rows = {(r["task"], r["metric"]): r for r in result["lm_eval"]["table"]}
    assert {("world_mc", "acc,none"), ("world_mc", "acc_norm,none"), ("world_gen", "exact_match,none")} <= set(rows)
    for row in rows.values():
        assert row["change"] == pytest.approx(row["model"] - row["original"])


@pytest.mark.parametrize("args, message", [
    (["--lm-eval-tasks", "no_such_task"], "--lm-eval-tasks: unknown task 'no_such_task'"),
    (["--lm-eval-tasks", "world_mc", "--lm-eval-include-path", "/nonexistent"],
     "--lm-eval-include-path /nonexistent: not a directory"),
])
def test_eval_lm_eval_bad_inputs(base_run, tmp_path, capsys, args, message):
    from unlearn_jax.cli import main

    assert main(["eval", "--model", str(base_run), "--out", str(tmp_path / "e.json"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e.json").exists()
