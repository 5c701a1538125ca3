"""The fake-unlearning audit: quantization and pruning transforms, the relearning split, probes,
verdicts, and `unlearn-jax audit` end to end on the tiny world (gold vs itself, a planted hidden model,
the untouched original)."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax import UserError
from unlearn_jax.audit import verdict
from unlearn_jax.audit.probe import answer_positions, linear_probe_accuracy
from unlearn_jax.audit.prune import input_feature_norms, magnitude_prune, wanda_prune
from unlearn_jax.audit.quantize import (
    QuantScheme,
    changed_code_fraction,
    fake_quantize,
    kernel_paths,
    parse_schemes,
    quantize_kernel,
)
from unlearn_jax.audit.relearn import fact_key, split_by_fact
from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.models import llama

TINY = llama.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=40, num_layers=2, num_heads=2,
                         num_kv_heads=2, head_dim=16)


@pytest.fixture(scope="module")
def tiny_params():
    return llama.init_params(TINY, jax.random.PRNGKey(0))


@pytest.mark.parametrize("bits, qmax", [(8, 127), (4, 7)])
@pytest.mark.parametrize("group", [None, 16])
def test_quantize_kernel_error_bound_and_scale_axis(bits, qmax, group):
    rng = np.random.default_rng(0)
    # (in=40, out=6) kernel whose output columns differ in scale by 1000x: a scale on the wrong axis
    # would flatten the small columns to zero codes.
    kernel = rng.normal(size=(40, 6)).astype(np.float32) * np.logspace(-3, 0, 6, dtype=np.float32)
    codes, dequantized = quantize_kernel(jnp.asarray(kernel), QuantScheme(bits, group))
    codes, dequantized = np.asarray(codes), np.asarray(dequantized)
    assert codes.shape == dequantized.shape == kernel.shape
    size = group or 40
    for start in range(0, 40, size):  # every (group of inputs, output column) uses its own absmax
        block = slice(start, start + size)  # 40 = 16 + 16 + 8: the last group is shorter (zero padding)
        absmax = np.abs(kernel[block]).max(axis=0)
        scale = absmax / (qmax + 0.5)
        assert np.all(np.abs(kernel[block] - dequantized[block]) <= scale / 2 * (1 + 1e-4))  # float32 division
        top = np.abs(codes[block].astype(int)).max(axis=0)  # absmax lands on ±qmax, or −(qmax+1) when negative
        assert np.all((top == qmax) | (top == qmax + 1))
        np.testing.assert_allclose(dequantized[block], codes[block] * scale, rtol=1e-5)


def test_fake_quantize_touches_only_decoder_kernels(tiny_params):
    q = fake_quantize(tiny_params, QuantScheme(4, 16))
    paths = set(kernel_paths(tiny_params))
    assert len(paths) == 2 * 7
    for path, (a, b) in zip(
        ["/".join(k.key for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(tiny_params)[0]],
        zip(jax.tree_util.tree_leaves(tiny_params), jax.tree_util.tree_leaves(q), strict=True), strict=True):
        assert (path in paths) == (not np.array_equal(np.asarray(a), np.asarray(b))), path


def test_changed_code_fraction(tiny_params):
    scheme = QuantScheme(8)
    same = changed_code_fraction(tiny_params, tiny_params, scheme)
    assert same == {"0": 0.0, "1": 0.0, "all": 0.0}
    # nudge layer 1's down projection by a full bucket in every weight except each column's absmax entry
    w = tiny_params["layers_1"]["mlp"]["down_proj"]["kernel"]
    scale = jnp.abs(w).max(axis=0) / 127.5
    keep = jnp.abs(w) == jnp.abs(w).max(axis=0)
    moved = jnp.where(keep, w, w + jnp.where(w > 0, -1.0, 1.0) * scale)
    other = jax.tree_util.tree_map(lambda x: x, tiny_params)
    other["layers_1"]["mlp"]["down_proj"]["kernel"] = moved
    changed = changed_code_fraction(tiny_params, other, scheme)
    kernels = set(kernel_paths(tiny_params))
    n_down = w.size
    n_layer = sum(x.size for p, x in _kernels(tiny_params) if p.startswith("layers_1/") and p in kernels)
    assert changed["0"] == 0.0
    assert changed["1"] == pytest.approx((n_down - w.shape[1]) / n_layer, abs=2 / n_layer)
    # an update far below half a bucket changes no code
    tiny = jax.tree_util.tree_map(lambda x: x, tiny_params)
    tiny["layers_1"]["mlp"]["down_proj"]["kernel"] = w + 1e-3 * scale * jnp.sign(w)
    assert changed_code_fraction(tiny_params, tiny, scheme)["all"] < 0.01


def _kernels(params):
    return [("/".join(k.key for k in p), x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]]


def test_parse_schemes():
    assert [s.name for s in parse_schemes("int8, int4,int4-g64")] == ["int8", "int4", "int4-g64"]
    for bad in ("int3", "int4-g0", "fp8", ""):
        with pytest.raises(UserError, match="--quant-schemes"):
            parse_schemes(bad)


def _token_set(n=6, length=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, TINY.vocab_size, (n, length)).astype(np.int32)
    mask = np.ones((n, length), np.int32)
    mask[1, 5:] = 0
    loss = mask.copy()
    loss[:, :3] = 0
    return TokenSet(ids, mask, loss, tuple(str(i) for i in range(n)))


def test_magnitude_and_wanda_pruning(tiny_params):
    pruned = magnitude_prune(tiny_params, 0.3)
    for path, w in _kernels(pruned):
        original = dict(_kernels(tiny_params))[path]
        if path in kernel_paths(tiny_params):
            zero = np.asarray(w) == 0
            assert zero.sum() == int(0.3 * w.size)
            assert np.abs(np.asarray(original))[zero].max() <= np.abs(np.asarray(original))[~zero].min()
        else:
            assert np.array_equal(np.asarray(w), np.asarray(original))
    # Wanda: per output column; a feature with a huge activation norm keeps all its weights
    norms = {p: jnp.ones(dict(_kernels(tiny_params))[p].shape[0]) for p in kernel_paths(tiny_params)}
    path = "layers_0/mlp/down_proj/kernel"
    norms[path] = norms[path].at[3].set(1e6)
    pruned = wanda_prune(tiny_params, norms, 0.5)
    w = np.asarray(pruned["layers_0"]["mlp"]["down_proj"]["kernel"])
    assert np.all((w == 0).sum(axis=0) == 20) and np.all(w[3] != 0)


def test_input_feature_norms_match_a_hand_computation(tiny_params):
    data = _token_set()
    norms = input_feature_norms(tiny_params, TINY, data, batch_size=4)  # last batch padded: must not count
    emb = np.asarray(tiny_params["embed_tokens"]["embedding"])[data.input_ids]
    scale = np.asarray(tiny_params["layers_0"]["input_layernorm"]["scale"])
    normed = emb / np.sqrt((emb ** 2).mean(-1, keepdims=True) + TINY.rms_norm_eps) * scale
    real = data.attention_mask[..., None] > 0
    expected = np.sqrt((normed ** 2 * real).sum(axis=(0, 1)))
    np.testing.assert_allclose(np.asarray(norms["layers_0/self_attn/q_proj/kernel"]), expected, rtol=1e-4)
    assert norms["layers_0/mlp/down_proj/kernel"].shape == (TINY.intermediate_size,)


def test_split_by_fact_keeps_facts_together():
    records = [{"id": f"{p}:{a}:{t}", "entity": f"p{p}", "group": a} for p in range(10) for a in "xy" for t in "01"]
    train, held = split_by_fact(records, 0.2, seed=0)
    assert len(train) == 8 and len(held) == 32  # 4 of 20 facts, two templates each
    assert not {fact_key(records[i]) for i in train} & {fact_key(records[i]) for i in held}
    assert np.array_equal(split_by_fact(records, 0.2, seed=0)[0], train)
    with pytest.raises(UserError, match="--relearn-fraction"):
        split_by_fact(records, 1.0, seed=0)


def test_answer_positions_and_linear_probe():
    data = _token_set()
    position, target = answer_positions(data)
    assert np.all(position == 2) and np.array_equal(target, data.input_ids[:, 3])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 5)) + 3 * np.eye(5)[labels]
    acc, hits = linear_probe_accuracy(x[:200], labels[:200] + 10, x[200:], labels[200:] + 10)
    assert acc > 0.9 and hits.shape == (100,)
    acc, _ = linear_probe_accuracy(x[:200], rng.permutation(labels[:200]), x[200:], labels[200:])
    assert acc < 0.6


def test_verdict_rules():
    rng = np.random.default_rng(0)
    a = rng.random(200) < 0.5
    same = verdict.excess(a, a)
    assert same["excess"] == 0 and not same["significant"]
    more = verdict.excess(a | (rng.random(200) < 0.5), a)
    assert more["significant"] and more["ci"][0] > 0
    small = verdict.excess(np.r_[np.ones(4), np.zeros(196)], np.zeros(200))  # 2 points: under the margin
    assert not small["significant"]
    assert verdict.judge(True, [more]) == "not_forgotten"
    assert verdict.judge(False, [same, more]) == "hidden"
    assert verdict.judge(False, [same]) == "removed"
    assert verdict.overall(["removed", "hidden"]) == "hidden"
    assert verdict.overall(["hidden", "not_forgotten"]) == "not_forgotten"


# ---- end to end on the tiny world ---------------------------------------------------------------

SMALL = dict(quant_schemes="int8,int4-g32", sparsities=(0.3,), relearn_steps=(0, 5, 10), capacity_steps=(0, 10),
             max_retain=200, attack_facts=4, suffix_length=6, gcg_steps=5, gcg_candidates=32, gcg_top_k=32,
             embed_steps=20)


def audit_config(world_dir, model, original, out, retrained=None, **kw):
    from unlearn_jax.runs.audit import AuditConfig

    values = dict(model=str(model), original=str(original), retrained=str(retrained) if retrained else None,
                  forget=str(world_dir / "forget.jsonl"), retain=str(world_dir / "retain.jsonl"), out=str(out),
                  **SMALL)
    values.update(kw)
    return AuditConfig(**values)


@pytest.fixture(scope="module")
def planted_hidden(base_run, world_dir, tmp_path_factory):
    """A deliberately shallow 'unlearning': only the last decoder layer is trained to avoid the forget
    answers, so layers 0-2 still carry them."""
    from unlearn_jax.config import UnlearnConfig
    from unlearn_jax.runs.unlearn import unlearn

    out = tmp_path_factory.mktemp("planted") / "run"
    run = unlearn(UnlearnConfig(model=str(base_run), forget=str(world_dir / "forget.jsonl"),
                                retain=str(world_dir / "retain.jsonl"), method="graddiff", trainable="^layers_3/",
                                alpha=1.0, steps=60, lr=1e-3, out=str(out)), quiet=True)
    assert run["metrics"]["after"]["forget_acc"] <= 0.1
    return out


def test_gold_model_against_itself_is_removed_everywhere(gold_run, base_run, world_dir, tmp_path):
    from unlearn_jax.runs.audit import audit

    result = audit(audit_config(world_dir, gold_run, base_run, tmp_path / "a", retrained=gold_run), quiet=True)
    assert result["overall"] == "removed" and result["baseline"] == "retrained"
    for name, probe in result["probes"].items():
        assert probe["verdict"] == "removed", name
    quant = result["probes"]["quant"]
    assert quant["model"]["int8"] == quant["retrained"]["int8"]
    assert 0 < quant["changed_codes_vs_original"]["int4-g32"]["all"] <= 1
    assert result["probes"]["capacity"]["data"].endswith("holdout.jsonl")  # the world's never-seen people
    assert set(result["probes"]) == {"quant", "prune", "relearn", "probe", "capacity", "gcg", "embed"}
    assert result["probes"]["gcg"]["facts"] == 4


def test_planted_hidden_model_is_caught(planted_hidden, gold_run, base_run, world_dir, tmp_path):
    from unlearn_jax.runs.audit import audit

    out = tmp_path / "a"
    result = audit(audit_config(world_dir, planted_hidden, base_run, out, retrained=gold_run,
                                probes=("quant", "relearn", "probe")), quiet=True)
    assert result["probes"]["relearn"]["verdict"] == "hidden", result["probes"]["relearn"]
    assert result["probes"]["probe"]["verdict"] == "hidden"
    assert result["overall"] == "hidden"
    relearn = result["probes"]["relearn"]
    gold_curve = [c["heldout"]["acc"] for c in relearn["retrained"]["forget"]]
    model_curve = [c["heldout"]["acc"] for c in relearn["model"]["forget"]]
    assert max(gold_curve) <= 0.2 and max(model_curve) >= max(gold_curve) + 0.1
    on_disk = json.loads((out / "audit.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    for name in ("quant", "relearn", "probe"):
        assert {"verdict", "model", "original", "retrained"} <= set(on_disk["probes"][name])
    assert "_correct" not in (out / "audit.json").read_text()
    for png in ("quant.png", "changed_codes.png", "relearn.png", "probe.png"):
        assert (out / png).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "# Unlearning audit: HIDDEN" in report and "![relearning](relearn.png)" in report
    assert json.loads((out / "run.json").read_text())["overall"] == "hidden"

    weaker = audit(audit_config(world_dir, planted_hidden, base_run, tmp_path / "b", probes=("relearn",)), quiet=True)
    assert weaker["baseline"] == "self" and "weaker" in weaker["judgement"]
    assert weaker["probes"]["relearn"]["verdict"] == "hidden"


def test_original_model_is_not_forgotten(base_run, gold_run, world_dir, tmp_path):
    from unlearn_jax.runs.audit import audit

    result = audit(audit_config(world_dir, base_run, base_run, tmp_path / "a", retrained=gold_run,
                                probes=("quant", "prune")), quiet=True)
    assert result["overall"] == "not_forgotten"
    without_gold = audit(audit_config(world_dir, base_run, base_run, tmp_path / "b", probes=("quant",)), quiet=True)
    assert without_gold["overall"] == "not_forgotten"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "unlearn_jax.cli", "audit", *args], capture_output=True, text=True)


@pytest.mark.parametrize("extra, message", [
    (["--probes", "quant,gcgx"], "--probes: unknown probe 'gcgx'"),
    (["--quant-schemes", "int3"], "--quant-schemes: 'int3' is not a scheme"),
    (["--sparsities", "0.5,1.5"], "--sparsities must be in (0, 1)"),
    (["--relearn-steps", "5,0"], "relearning steps must be increasing"),
    (["--relearn-fraction", "1"], "--relearn-fraction must be in (0, 1)"),
    (["--relearn-steps", "0,x"], "--relearn-steps must be comma-separated integers"),
    (["--suffix-length", "0"], "GCG suffix length must be >= 1"),
    (["--attack-facts", "1"], "--attack-facts must be >= 2"),
])
def test_bad_arguments_are_one_line_errors(gold_run, base_run, world_dir, tmp_path, extra, message):
    result = cli("--model", str(gold_run), "--original", str(base_run), "--forget", str(world_dir / "forget.jsonl"),
                 "--retain", str(world_dir / "retain.jsonl"), "--out", str(tmp_path / "a"), "--probes", "relearn",
                 *extra)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()


def test_capacity_without_new_facts_and_existing_output(gold_run, base_run, world_dir, tmp_path):
    outside = tmp_path / "forget.jsonl"
    outside.write_text((world_dir / "forget.jsonl").read_text())
    result = cli("--model", str(gold_run), "--original", str(base_run), "--forget", str(outside),
                 "--retain", str(world_dir / "retain.jsonl"), "--out", str(tmp_path / "a"), "--probes", "capacity")
    assert result.returncode == 2 and "--capacity-data" in result.stderr
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "mine.txt").write_text("keep")
    result = cli("--model", str(gold_run), "--original", str(base_run), "--forget", str(world_dir / "forget.jsonl"),
                 "--retain", str(world_dir / "retain.jsonl"), "--out", str(tmp_path / "a"), "--probes", "quant")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (tmp_path / "a" / "mine.txt").read_text() == "keep"


def test_shared_reference_cache_changes_nothing_and_skips_the_references(planted_hidden, gold_run, base_run,
                                                                        world_dir, tmp_path, monkeypatch):
    from unlearn_jax.runs import audit as audit_lib

    probes = ("quant", "relearn")
    fresh = audit_lib.audit(audit_config(world_dir, planted_hidden, base_run, tmp_path / "fresh", retrained=gold_run,
                                         probes=probes), quiet=True)
    cache = audit_lib.ReferenceCache()
    audit_lib.audit(audit_config(world_dir, gold_run, base_run, tmp_path / "first", retrained=gold_run,
                                 probes=probes), quiet=True, cache=cache)
    calls = []
    real = audit_lib.finetune_curve
    monkeypatch.setattr(audit_lib, "finetune_curve", lambda *a, **k: calls.append(1) or real(*a, **k))
    shared = audit_lib.audit(audit_config(world_dir, planted_hidden, base_run, tmp_path / "shared",
                                          retrained=gold_run, probes=probes), quiet=True, cache=cache)
    assert shared == fresh
    assert len(calls) == 2  # relearning on forget and on retain data, for the audited model only
