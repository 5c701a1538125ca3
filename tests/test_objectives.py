"""Every objective's loss and gradient against an independent PyTorch computation written here from the
papers' formulas, on a tiny random Hugging Face Llama."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.hf_models import make_hf_model
from unlearn_jax import load_model
from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.engine.state import merge_params, split_params
from unlearn_jax.models.hf import hf_tensor_name
from unlearn_jax.objectives import METHODS, Hyper
from unlearn_jax.objectives.reference import layer_outputs, reference_nll
from unlearn_jax.objectives.rmu import control_vector

B, S = 4, 12


def token_set(seed: int, vocab: int) -> TokenSet:
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(B, S)).astype(np.int32)
    lengths = np.array([12, 9, 11, 7])
    attention = (np.arange(S)[None] < lengths[:, None]).astype(np.int32)
    loss = attention.copy()
    loss[:, :4] = 0
    return TokenSet(ids * attention, attention, loss, tuple(map(str, range(B))))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_setup(tmp_path_factory, num_hidden_layers=2)


@pytest.fixture(scope="module")
def setup3(tmp_path_factory):
    """Three layers: HF's last hidden state is after the final norm, so RMU steers a middle layer."""
    return build_setup(tmp_path_factory, num_hidden_layers=3)


def build_setup(tmp_path_factory, num_hidden_layers):
    model = make_hf_model("llama", num_hidden_layers=num_hidden_layers)
    ref_model = make_hf_model("llama", num_hidden_layers=num_hidden_layers)  # same architecture...
    with torch.no_grad():  # ...different weights: a reference that disagrees with the model
        for p in ref_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path, ref_path = tmp_path_factory.mktemp("m"), tmp_path_factory.mktemp("ref")
    model.save_pretrained(path)
    ref_model.save_pretrained(ref_path)
    lm, ref = load_model(path), load_model(ref_path)
    vocab = lm.config.vocab_size
    sets = {"answer": token_set(0, vocab), "idk_answer": token_set(1, vocab), "retain": token_set(2, vocab)}
    return model, ref_model, lm, ref, sets


def torch_batch(data: TokenSet):
    return (torch.tensor(data.input_ids, dtype=torch.long), torch.tensor(data.attention_mask),
            torch.tensor(data.loss_mask).float())


def torch_seq_nll(model, data):
    """S(x, y) = −Σ_t mask_t log p(x_t | x_<t), per sequence; and |y|."""
    ids, attention, mask = torch_batch(data)
    logits = model(input_ids=ids, attention_mask=attention).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    return -(logp * mask[:, 1:]).sum(-1), mask[:, 1:].sum(-1), logits


def torch_token_mean_nll(model, data):
    s, n, _ = torch_seq_nll(model, data)
    return s.sum() / n.sum()


def torch_kl(model, ref_model, data):
    ids, attention, mask = torch_batch(data)
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=attention).logits[:, :-1], -1)
    with torch.no_grad():
        ref_logp = torch.log_softmax(ref_model(input_ids=ids, attention_mask=attention).logits[:, :-1], -1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return (kl * mask[:, 1:]).sum() / mask[:, 1:].sum()


def torch_loss(method, model, ref_model, sets, hp):
    """The methods' formulas, written independently in PyTorch."""
    forget, idk, retain = sets["answer"], sets["idk_answer"], sets["retain"]
    if hp.retain_loss == "kl":
        retain_term = torch_kl(model, ref_model, retain)
    else:
        retain_term = torch_token_mean_nll(model, retain)
    if method == "ga":
        return -hp.gamma * torch_token_mean_nll(model, forget)
    if method == "graddiff":
        return -hp.gamma * torch_token_mean_nll(model, forget) + hp.alpha * retain_term
    if method == "npo":
        s, _, _ = torch_seq_nll(model, forget)
        with torch.no_grad():
            s_ref, _, _ = torch_seq_nll(ref_model, forget)
        return hp.gamma * (2 / hp.beta) * torch.nn.functional.softplus(hp.beta * (s_ref - s)).mean() + \
            hp.alpha * retain_term
    if method == "simnpo":
        s, n, _ = torch_seq_nll(model, forget)
        return -hp.gamma * (2 / hp.beta) * torch.nn.functional.logsigmoid(hp.beta * s / n - hp.margin).mean() + \
            hp.alpha * retain_term
    if method == "idk":
        return hp.gamma * torch_token_mean_nll(model, idk) + hp.alpha * retain_term
    if method == "dpo":
        s_w, _, _ = torch_seq_nll(model, idk)
        s_l, _, _ = torch_seq_nll(model, forget)
        with torch.no_grad():
            r_w, _, _ = torch_seq_nll(ref_model, idk)
            r_l, _, _ = torch_seq_nll(ref_model, forget)
        margin = (r_w - s_w) - (r_l - s_l)
        return -hp.gamma * (2 / hp.beta) * torch.nn.functional.logsigmoid(hp.beta * margin).mean() + \
            hp.alpha * retain_term
    raise ValueError(method)


def jax_batches(sets):
    as_jax = lambda d: {k: jnp.asarray(v) for k, v in d.rows(np.arange(B)).items()}  # noqa: E731
    forget = {"answer": as_jax(sets["answer"]), "idk_answer": as_jax(sets["idk_answer"]), "index": jnp.arange(B)}
    return forget, {**as_jax(sets["retain"]), "index": jnp.arange(B)}


def assert_grads_match(grads, model, trainable_names=None):
    named = dict(model.named_parameters())
    checked = 0
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        name, transpose = hf_tensor_name(tuple(k.key for k in path))
        theirs = named[name].grad
        theirs = np.zeros(g.shape[::-1] if transpose else g.shape) if theirs is None else theirs.numpy()
        theirs = theirs.T if transpose else theirs
        np.testing.assert_allclose(np.asarray(g), theirs, rtol=1e-4, atol=2e-6, err_msg=name)
        checked += 1
    assert checked == len(jax.tree_util.tree_leaves(grads))


CASES = [
    ("ga", Hyper(gamma=1.0, alpha=0.0)),
    ("graddiff", Hyper(alpha=0.7, gamma=1.3)),
    ("graddiff", Hyper(alpha=0.7, retain_loss="kl")),
    ("npo", Hyper(beta=0.1, alpha=1.0)),
    ("npo", Hyper(beta=0.5, alpha=0.3, retain_loss="kl")),
    ("simnpo", Hyper(beta=4.5, alpha=1.0)),
    ("simnpo", Hyper(beta=2.0, alpha=0.5, margin=0.7)),
    ("idk", Hyper(alpha=1.0)),
    ("dpo", Hyper(beta=0.1, alpha=1.0)),
]


@pytest.mark.parametrize("method, hp", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_loss_and_gradient_match_pytorch(setup, method, hp):
    model, ref_model, lm, ref, sets = setup
    frozen = {"ref_nll": {t: jnp.asarray(reference_nll(ref.params, ref.config, sets[t]))
                          for t in METHODS[method].reference}}
    if hp.retain_loss == "kl":
        frozen["ref_params"] = ref.params
    forget, retain = jax_batches(sets)
    loss_fn = lambda p: METHODS[method].loss(p, lm.config, frozen, forget, retain, hp)  # noqa: E731
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(lm.params)
    model.zero_grad()
    ref_loss = torch_loss(method, model, ref_model, sets, hp)
    ref_loss.backward()
    np.testing.assert_allclose(float(loss), ref_loss.item(), rtol=1e-5)
    assert_grads_match(grads, model)


def test_cached_reference_equals_rerunning_it(setup):
    _, _, lm, ref, sets = setup
    cached = reference_nll(ref.params, ref.config, sets["answer"], batch_size=3)  # padding of the last batch
    rerun = reference_nll(ref.params, ref.config, sets["answer"], batch_size=4)
    np.testing.assert_array_equal(cached, rerun)
    forget, retain = jax_batches(sets)
    hp = Hyper(beta=0.1, alpha=1.0)
    with_cache = METHODS["npo"].loss(lm.params, lm.config, {"ref_nll": {"answer": jnp.asarray(cached)}},
                                     forget, retain, hp)[0]
    from unlearn_jax.objectives.logprobs import sequence_nll, token_logprobs
    per_step = sequence_nll(*token_logprobs(ref.params, ref.config, forget["answer"]))
    without = METHODS["npo"].loss(lm.params, lm.config, {"ref_nll": {"answer": per_step}}, forget, retain, hp)[0]
    np.testing.assert_allclose(float(with_cache), float(without), rtol=1e-6)


@pytest.mark.parametrize("first_layer", [0, 1])
def test_rmu_matches_pytorch(setup3, first_layer):
    model, ref_model, lm, ref, sets = setup3
    layer, coeff, hp_alpha = 1, 5.0, 3.0
    hp = Hyper(alpha=hp_alpha, gamma=1.0, rmu_layer=layer, rmu_coeff=coeff, rmu_first_layer=first_layer)
    trainable, frozen_params = split_params(lm.params, rf"layers_[{first_layer}1]/mlp/down_proj")
    u = control_vector(lm.config.hidden_size, coeff, seed=3)
    frozen = {"control": jnp.asarray(u),
              "retain_target": jnp.asarray(layer_outputs(ref.params, ref.config, sets["retain"], layer))}
    if first_layer:
        frozen["forget_prefix"] = jnp.asarray(layer_outputs(lm.params, lm.config, sets["answer"], first_layer - 1))
        frozen["retain_prefix"] = jnp.asarray(layer_outputs(lm.params, lm.config, sets["retain"], first_layer - 1))
    forget, retain = jax_batches(sets)

    def loss_fn(t):
        return METHODS["rmu"].loss(merge_params(t, frozen_params), lm.config, frozen, forget, retain, hp)

    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)

    def steered(m, data):
        ids, attention, mask = torch_batch(data)
        h = m(input_ids=ids, attention_mask=attention, output_hidden_states=True).hidden_states[layer + 1]
        positions = torch.nn.functional.pad(mask[:, 1:], (0, 1))
        return h, positions

    model.zero_grad()
    h_f, pos_f = steered(model, sets["answer"])
    l_f = (((h_f - torch.tensor(u)) ** 2).mean(-1) * pos_f).sum() / pos_f.sum()
    h_r, pos_r = steered(model, sets["retain"])
    with torch.no_grad():
        target, _ = steered(ref_model, sets["retain"])
    l_r = (((h_r - target) ** 2).mean(-1) * pos_r).sum() / pos_r.sum()
    (l_f + hp_alpha * l_r).backward()
    np.testing.assert_allclose(float(loss), (l_f + hp_alpha * l_r).item(), rtol=1e-5)
    assert_grads_match(grads, model)
    assert set(trainable) == {f"layers_{first_layer}", "layers_1"}
    assert list(trainable["layers_1"]) == ["mlp"] and list(trainable["layers_1"]["mlp"]) == ["down_proj"]
