"""Model parity with transformers, Hugging Face round trips, sharding equivalence, bad inputs."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from tests.hf_models import make_hf_model
from unlearn_jax import UserError, load_model
from unlearn_jax.models import llama, sharding

KINDS = ["llama", "llama3_rope", "llama_tied", "llama_bias", "mistral", "mistral_window", "qwen2", "qwen2_tied"]
SEQ = 520


def batch(vocab: int, seq: int = SEQ, short: int = 300):
    """Two rows: one full ~500-token sequence, one right-padded after `short` tokens."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, size=(2, seq))
    mask = np.ones((2, seq), np.int64)
    mask[1, short:] = 0
    ids[1, short:] = 0
    return ids, mask


def hf_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


@pytest.fixture(scope="module")
def hf_saved(tmp_path_factory):
    """kind -> (kind, torch model, saved directory), built once per kind."""
    cache = {}

    def get(kind):
        if kind not in cache:
            model = make_hf_model(kind)
            path = tmp_path_factory.mktemp(kind)
            model.save_pretrained(path)
            cache[kind] = kind, model, path
        return cache[kind]

    return get


@pytest.fixture(params=KINDS)
def saved(request, hf_saved):
    return hf_saved(request.param)


def test_logits_match_transformers(saved):
    kind, model, path = saved
    lm = load_model(path)
    ids, mask = batch(lm.config.vocab_size)
    ours = np.asarray(lm.logits(ids, mask))
    ref = hf_logits(model, ids, mask)
    valid = mask.astype(bool)
    np.testing.assert_allclose(ours[valid], ref[valid], atol=1e-4, rtol=1e-4)
    if kind == "mistral_window":
        assert lm.config.sliding_windows == (64, 64)


def test_save_hf_round_trip(saved, tmp_path):
    kind, model, path = saved
    lm = load_model(path)
    lm.save_hf(tmp_path / "out")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    ids, mask = batch(lm.config.vocab_size, seq=64, short=40)
    valid = mask.astype(bool)
    np.testing.assert_allclose(hf_logits(reloaded, ids, mask)[valid], hf_logits(model, ids, mask)[valid],
                               atol=1e-5, rtol=1e-5)
    assert reloaded.config.tie_word_embeddings == model.config.tie_word_embeddings


def test_sharded_safetensors_index(tmp_path):
    model = make_hf_model("llama")
    model.save_pretrained(tmp_path / "hf", max_shard_size="60KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    lm = load_model(tmp_path / "hf")
    ids, mask = batch(lm.config.vocab_size, seq=32, short=20)
    valid = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(lm.logits(ids, mask))[valid], hf_logits(model, ids, mask)[valid],
                               atol=1e-4, rtol=1e-4)
    lm.save_hf(tmp_path / "ours", max_shard_bytes=60_000)
    index = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again = load_model(tmp_path / "ours")
    chex_equal = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), lm.params, again.params)
    assert all(jax.tree_util.tree_leaves(chex_equal))


def test_bf16_save_and_compute(tmp_path):
    model = make_hf_model("llama")
    model.save_pretrained(tmp_path / "hf")
    lm = load_model(tmp_path / "hf", dtype="bfloat16", param_dtype="bfloat16")
    assert jax.tree_util.tree_leaves(lm.params)[0].dtype == jnp.bfloat16
    ids, mask = batch(lm.config.vocab_size, seq=64, short=40)
    ours = np.asarray(lm.logits(ids, mask))
    assert ours.dtype == np.float32
    valid = mask.astype(bool)
    ref = hf_logits(model, ids, mask)[valid]
    assert np.abs(ours[valid] - ref).max() < 0.1 * np.abs(ref).max()
    lm.save_hf(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16


def test_hidden_states_and_early_stop(hf_saved):
    _, model, path = hf_saved("llama")
    lm = load_model(path)
    ids, mask = batch(lm.config.vocab_size, seq=16, short=10)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    out = llama.apply(lm.params, lm.config, jnp.asarray(ids), jnp.asarray(mask), hidden_layers=(0,))
    valid = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(out.hidden[0])[valid], ref.hidden_states[1].numpy()[valid], atol=1e-5)
    early = llama.apply(lm.params, lm.config, jnp.asarray(ids), jnp.asarray(mask), hidden_layers=(0,), last_layer=0)
    assert early.logits is None and early.final_hidden is None
    np.testing.assert_array_equal(np.asarray(early.hidden[0]), np.asarray(out.hidden[0]))
    last = llama.apply(lm.params, lm.config, jnp.asarray(ids), hidden_layers=(1,)).hidden[1]
    lens = llama.logit_lens(lm.params, lm.config, last)
    np.testing.assert_allclose(np.asarray(lens), np.asarray(lm.logits(ids)), atol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("spec", ["data=2,fsdp=4", "data=8", "fsdp=2,tensor=4"])
def test_sharded_forward_equals_single_device(hf_saved, kind, spec):
    _, _, path = hf_saved(kind)
    assert jax.device_count() == 8
    lm = load_model(path)
    ids, mask = batch(lm.config.vocab_size, seq=64, short=40)
    ids, mask = np.tile(ids, (4, 1)), np.tile(mask, (4, 1))
    single = np.asarray(lm.logits(ids, mask))
    mesh = sharding.make_mesh(spec)
    params = sharding.shard_params(lm.params, mesh)
    sharded = jax.jit(llama.apply, static_argnums=1)(params, lm.config, *sharding.shard_batch((ids, mask), mesh)).logits
    if spec != "fsdp=2,tensor=4":
        assert sharded.sharding.spec[0] is not None
    np.testing.assert_allclose(np.asarray(sharded), single, atol=1e-5, rtol=1e-5)
    loaded = load_model(path, mesh=mesh)
    kernel = loaded.params["layers_0"]["mlp"]["down_proj"]["kernel"]
    assert kernel.sharding == sharding.param_shardings(lm.params, mesh)["layers_0"]["mlp"]["down_proj"]["kernel"]


def test_sharding_table():
    mesh = sharding.make_mesh("data=2,fsdp=4")
    params = jax.eval_shape(lambda: llama.init_params(
        llama.ModelConfig(vocab_size=100, hidden_size=64, intermediate_size=96, num_layers=1, num_heads=4,
                          num_kv_heads=2, head_dim=16), jax.random.key(0)))
    specs = sharding.describe_shardings(params, mesh)
    assert specs["layers_0/mlp/down_proj/kernel"] == "P(None, 'fsdp')"
    assert specs["layers_0/self_attn/q_proj/kernel"] == "P('fsdp', None)"
    assert specs["embed_tokens/embedding"] == "P(None, 'fsdp')"
    assert specs["norm/scale"] == "P(None,)"
    assert sharding.batch_sharding(mesh).spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)


@pytest.mark.parametrize("spec, message", [
    ("data=3", "uses 3 devices but 8 are available"),
    ("data=2,fsdp=x", "must be a positive integer"),
    ("model=8", "unknown axis"),
    ("data=4,data=2", "given twice"),
])
def test_bad_mesh_specs(spec, message):
    with pytest.raises(UserError, match=message):
        sharding.make_mesh(spec)


def test_batch_not_divisible():
    with pytest.raises(UserError, match="not divisible"):
        sharding.shard_batch(np.zeros((6, 4), np.int32), sharding.make_mesh("data=8"))


def test_bad_inputs(tmp_path):
    model = make_hf_model("llama")
    good = tmp_path / "good"
    model.save_pretrained(good)

    with pytest.raises(UserError, match="no such model directory"):
        load_model(tmp_path / "nope")

    bad_type = tmp_path / "bad_type"
    shutil.copytree(good, bad_type)
    config = json.loads((bad_type / "config.json").read_text())
    config["model_type"] = "gpt2"
    (bad_type / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="model_type 'gpt2' is not supported"):
        load_model(bad_type)

    from safetensors.numpy import load_file, save_file
    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    tensors = load_file(missing / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, missing / "model.safetensors")
    with pytest.raises(UserError, match="tensor model.layers.1.mlp.up_proj.weight is missing"):
        load_model(missing)

    wrong_shape = tmp_path / "wrong_shape"
    shutil.copytree(good, wrong_shape)
    tensors = load_file(wrong_shape / "model.safetensors")
    tensors["model.norm.weight"] = np.ones(3, np.float32)
    save_file(tensors, wrong_shape / "model.safetensors")
    with pytest.raises(UserError, match="model.norm.weight has shape"):
        load_model(wrong_shape)

    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="model.safetensors"):
        load_model(truncated)

    with pytest.raises(UserError, match="hub is unreachable"):
        load_model("no-such-org/no-such-model")


def test_vocab_mismatch_refused(tmp_path):
    model = make_hf_model("llama", vocab_size=10)
    model.save_pretrained(tmp_path)
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=__import__("tokenizers").Tokenizer(__import__("tokenizers").models.WordLevel(
            {f"w{i}": i for i in range(20)}, unk_token="w0")))
    tok.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="tokenizer has 20 tokens but the model's vocabulary is 10"):
        load_model(tmp_path)
