"""Engine: the update step's arithmetic, packing, the non-finite guard, resume, sharding, trainable split."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from tests.hf_models import make_hf_model
from unlearn_jax import UserError, load_model
from unlearn_jax.data.tokenize import TokenSet, pack
from unlearn_jax.engine.loop import DivergedError, LoopConfig, run_loop
from unlearn_jax.engine.optim import OptimizerConfig, make_optimizer
from unlearn_jax.engine.state import init_state, split_params
from unlearn_jax.engine.step import make_step
from unlearn_jax.models import llama, sharding
from unlearn_jax.objectives.nll import nll_loss

CONFIG = llama.ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                           num_kv_heads=2, head_dim=8, max_position_embeddings=64)


def random_tokenset(n=16, length=12, seed=0) -> TokenSet:
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, CONFIG.vocab_size, size=(n, length)).astype(np.int32)
    lengths = rng.integers(5, length + 1, size=n)
    attention = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    loss = attention.copy()
    loss[:, :3] = 0
    return TokenSet(ids * attention, attention, loss, tuple(map(str, range(n))))


def objective(params, constants, batch, rng):
    return nll_loss(params, CONFIG, batch["train"])


def as_batch(rows):
    return {"train": {k: jnp.asarray(v) for k, v in rows.items()}}


def test_nll_loss_and_gradient_match_pytorch(tmp_path):
    model = make_hf_model("llama")
    model.save_pretrained(tmp_path)
    lm = load_model(tmp_path)
    data = random_tokenset()
    rows = {k: np.minimum(v, 96) for k, v in data.rows(np.arange(8)).items()}
    (loss, _), grads = jax.value_and_grad(lambda p: nll_loss(p, lm.config, {k: jnp.asarray(v) for k, v in
                                                                              rows.items()}), has_aux=True)(lm.params)
    ids, mask = torch.tensor(rows["input_ids"], dtype=torch.long), torch.tensor(rows["loss_mask"])
    logits = model(input_ids=ids, attention_mask=torch.tensor(rows["attention_mask"])).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    target = mask[:, 1:].float()
    ref = -(logp * target).sum() / target.sum()  # token-mean NLL, written from the formula
    ref.backward()
    np.testing.assert_allclose(float(loss), ref.item(), rtol=1e-5)
    ours = grads["layers_1"]["mlp"]["down_proj"]["kernel"]
    theirs = model.model.layers[1].mlp.down_proj.weight.grad.numpy().T
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grads["embed_tokens"]["embedding"]),
                               model.model.embed_tokens.weight.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_sgd_step_is_theta_minus_lr_grad():
    params = llama.init_params(CONFIG, jax.random.PRNGKey(0))
    batch = as_batch(random_tokenset().rows(np.arange(16)))
    grads = jax.grad(lambda p: objective(p, None, batch, None)[0])(params)
    optimizer = make_optimizer(OptimizerConfig(name="sgd", lr=0.5, max_grad_norm=0.0))
    state = init_state(jax.tree_util.tree_map(jnp.copy, params), optimizer, seed=0)
    state, metrics = make_step(objective, optimizer)(state, {}, None, batch)
    expected = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)  # fp32 reassociation only
    assert int(state.step) == 1 and not bool(metrics["skipped"])


def test_packed_batch_equals_unpacked():
    data = random_tokenset()
    params = llama.init_params(CONFIG, jax.random.PRNGKey(1))
    order = np.arange(len(data))
    packed, used = pack(data, order, rows=6, length=24)
    assert 0 < used < len(data)
    assert packed["attention_mask"].max() >= 2  # some row really holds several records
    unpacked = {k: jnp.asarray(v) for k, v in data.rows(order[:used]).items()}
    a = nll_loss(params, CONFIG, {k: jnp.asarray(v) for k, v in packed.items()})[0]
    b = nll_loss(params, CONFIG, unpacked)[0]
    np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


def test_non_finite_steps_are_skipped_and_stop_the_loop(tmp_path):
    params = llama.init_params(CONFIG, jax.random.PRNGKey(0))
    optimizer = make_optimizer(OptimizerConfig(lr=1e-3))
    bad = lambda p, c, b, r: (nll_loss(p, CONFIG, b["train"])[0] * jnp.nan, {})  # noqa: E731
    state = init_state(jax.tree_util.tree_map(jnp.copy, params), optimizer, seed=0)
    batch = as_batch(random_tokenset().rows(np.arange(4)))
    new, metrics = make_step(bad, optimizer)(state, {}, None, batch)
    assert bool(metrics["skipped"]) and int(new.bad_steps) == 1
    for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    state = init_state(jax.tree_util.tree_map(jnp.copy, params), optimizer, seed=0)
    with pytest.raises(DivergedError, match="non-finite for 3 steps in a row"):
        run_loop(make_step(bad, optimizer), state, {}, None, lambda pos, state: (batch, pos), {}, LoopConfig(
            steps=20, log_every=3, max_bad_steps=3), tmp_path, quiet=True)
    assert (tmp_path / "checkpoints").exists()


def _train(tmp_path, steps, crash_at=None, resume=False):
    data = random_tokenset(n=24)
    optimizer = make_optimizer(OptimizerConfig(lr=1e-2, warmup_steps=2, schedule="cosine", total_steps=steps))
    state = init_state(llama.init_params(CONFIG, jax.random.PRNGKey(0)), optimizer, seed=0)
    from unlearn_jax.data.sampler import EpochSampler

    sampler = EpochSampler(len(data), 4, seed=0)

    def next_batch(position, state):
        if crash_at is not None and position["epoch"] * 24 + position["offset"] >= 4 * (crash_at - 1):
            raise KeyboardInterrupt("simulated crash")
        index, position = sampler.next_batch(position)
        return as_batch(data.rows(index)), position

    return run_loop(make_step(objective, optimizer), state, {}, None, next_batch, sampler.start(),
                    LoopConfig(steps=steps, log_every=2, checkpoint_every=3), tmp_path, resume=resume, quiet=True)


def test_resume_is_bitwise_identical(tmp_path):
    full = _train(tmp_path / "full", 10)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "crashed", 10, crash_at=8)
    resumed = _train(tmp_path / "crashed", 10, resume=True)
    assert resumed.steps_run == 4  # restarted from the step-6 checkpoint
    for a, b in zip(jax.tree_util.tree_leaves(full.state), jax.tree_util.tree_leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    lines = (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 10 and lines == (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()


@pytest.mark.parametrize("spec", ["data=2,fsdp=4", "data=8"])
def test_sharded_step_equals_single_device(spec):
    params = llama.init_params(CONFIG, jax.random.PRNGKey(0))
    batch = as_batch(random_tokenset().rows(np.arange(16)))
    optimizer = make_optimizer(OptimizerConfig(name="sgd", lr=1.0))  # linear in the gradients: Adam's first
    step = make_step(objective, optimizer)  # step, g/|g|, would amplify fp32 noise in near-zero gradients
    single, single_metrics = step(init_state(jax.tree_util.tree_map(jnp.copy, params), optimizer, 0), {}, None, batch)
    mesh = sharding.make_mesh(spec)
    sharded_state = init_state(sharding.shard_params(params, mesh), optimizer, 0)
    sharded, sharded_metrics = step(sharded_state, {}, None, sharding.shard_batch(batch, mesh))
    kernel = sharded.params["layers_0"]["mlp"]["up_proj"]["kernel"]
    assert kernel.sharding.is_equivalent_to(sharding.param_shardings(params, mesh)["layers_0"]["mlp"]["up_proj"]
                                            ["kernel"], kernel.ndim)
    np.testing.assert_allclose(float(sharded_metrics["loss"]), float(single_metrics["loss"]), rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(sharded.params), jax.tree_util.tree_leaves(single.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_trainable_split_has_no_frozen_optimizer_state():
    params = llama.init_params(CONFIG, jax.random.PRNGKey(0))
    trainable, frozen = split_params(params, r"layers_1/mlp/down_proj")
    assert list(trainable) == ["layers_1"] and "layers_1" in frozen
    state = init_state(trainable, make_optimizer(OptimizerConfig()), 0)
    n_state = sum(x.size for x in jax.tree_util.tree_leaves(state.opt_state) if x.ndim)
    assert n_state == 2 * trainable["layers_1"]["mlp"]["down_proj"]["kernel"].size
    with pytest.raises(UserError, match="matches no parameter"):
        split_params(params, "nothing_like_this")
    with pytest.raises(UserError, match="not a valid regular expression"):
        split_params(params, "(")
    assert optax.tree.norm(trainable) > 0
