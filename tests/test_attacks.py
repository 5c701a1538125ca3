"""Adversarial suffixes: GCG's token gradient against PyTorch autograd, batched candidate scoring, the
monotone best-so-far loss, the embedding-space attack, and bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from tests.hf_models import make_hf_model
from unlearn_jax import UserError, load_model
from unlearn_jax.audit.embed_attack import EmbedAttackConfig, embed_attack
from unlearn_jax.audit.gcg import (
    AttackBatch,
    GCGConfig,
    allowed_tokens,
    build_attack_batch,
    candidate_losses,
    gcg,
    reference_hidden,
    retokenizes,
    token_gradients,
)
from unlearn_jax.models import llama


@pytest.fixture(scope="module")
def hf_and_ours(tmp_path_factory):
    model = make_hf_model("llama")
    path = tmp_path_factory.mktemp("m")
    model.save_pretrained(path)
    return model, load_model(path)


def _manual_batch(prompt_lengths=(5, 3), suffix=4, answer=2, seed=0) -> AttackBatch:
    rng = np.random.default_rng(seed)
    length = max(prompt_lengths) + suffix + answer + 1
    n = len(prompt_lengths)
    ids = rng.integers(3, 97, (n, length)).astype(np.int32)
    mask, loss = np.zeros_like(ids), np.zeros_like(ids)
    positions = np.zeros((n, suffix), np.int32)
    for i, p in enumerate(prompt_lengths):
        mask[i, : p + suffix + answer] = 1
        loss[i, p + suffix : p + suffix + answer] = 1
        positions[i] = np.arange(p, p + suffix)
    return AttackBatch(ids, mask, loss, positions, positions[:, -1])


def test_token_gradient_matches_pytorch_autograd(hf_and_ours):
    model, lm = hf_and_ours
    attack = _manual_batch()
    suffix = jnp.asarray([5, 9, 11, 40])
    loss, grad = token_gradients(lm.params, lm.config, attack, GCGConfig(suffix_length=4), suffix,
                                 jnp.zeros((2, lm.config.hidden_size)))

    weight = model.model.embed_tokens.weight.detach().double()
    model.double()
    one_hot = torch.nn.functional.one_hot(torch.tensor(np.asarray(suffix), dtype=torch.long), 97).double()
    one_hot.requires_grad_(True)
    total = 0.0
    for row in range(2):  # written from the definition: mean over prompts of the answer's token-mean NLL
        embeds = weight[torch.tensor(attack.input_ids[row], dtype=torch.long)].clone()
        embeds[torch.tensor(attack.suffix_positions[row], dtype=torch.long)] = one_hot @ weight
        logits = model(inputs_embeds=embeds[None], attention_mask=torch.tensor(attack.attention_mask[row:row + 1])
                       ).logits[0]
        targets = np.flatnonzero(attack.loss_mask[row])
        logp = torch.log_softmax(logits[targets - 1], -1)
        total = total - logp[torch.arange(len(targets)), torch.tensor(attack.input_ids[row, targets],
                                                                      dtype=torch.long)].mean() / 2
    total.backward()
    model.float()
    assert float(loss) == pytest.approx(total.item(), rel=1e-4)
    np.testing.assert_allclose(np.asarray(grad), one_hot.grad.numpy(), rtol=2e-3, atol=2e-5)


def test_batched_candidate_losses_equal_one_at_a_time(hf_and_ours):
    _, lm = hf_and_ours
    attack = _manual_batch()
    cfg = GCGConfig(suffix_length=4)
    zeros = jnp.zeros((2, lm.config.hidden_size))
    suffixes = jnp.asarray(np.random.default_rng(1).integers(3, 97, (6, 4)), jnp.int32)
    batched = np.asarray(candidate_losses(lm.params, lm.config, attack, cfg, suffixes, zeros))
    singles = [float(candidate_losses(lm.params, lm.config, attack, cfg, s[None], zeros)[0]) for s in suffixes]
    np.testing.assert_allclose(batched, singles, rtol=1e-5)
    # and the token gradient's loss is the same loss
    loss, _ = token_gradients(lm.params, lm.config, attack, cfg, suffixes[2], zeros)
    assert float(loss) == pytest.approx(singles[2], rel=1e-5)


@pytest.fixture(scope="module")
def world_model(world_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(world_dir / "tokenizer"))
    config = llama.ModelConfig(vocab_size=-(-len(tokenizer) // 64) * 64, hidden_size=32, intermediate_size=64,
                               num_layers=2, num_heads=2, num_kv_heads=2, head_dim=16)
    return tokenizer, config, llama.init_params(config, jax.random.PRNGKey(0))


def planted(world_dir):
    """A forget question of the world with a planted wrong answer (a city the person was not born in)."""
    from unlearn_jax.data.records import load_records

    record = next(r for r in load_records(str(world_dir / "forget.jsonl")) if r["group"] == "birth_city")
    wrong = next(c for c in ("Brenmoor", "Caldris") if c != record["answer"])
    return record["prompt"], wrong


def test_gcg_lowers_a_planted_target_monotonically(base_run, world_dir):
    lm = load_model(base_run)
    tokenizer, config, params = lm.tokenizer, lm.config, lm.params
    prompt, wrong = planted(world_dir)
    attack = build_attack_batch(tokenizer, [prompt], [wrong], suffix_length=6)
    result = gcg(params, config, tokenizer, attack, GCGConfig(suffix_length=6, top_k=32, candidates=64, steps=15,
                                                              stop_on_success=False))
    history = result["history"]
    assert all(b <= a for a, b in zip(history, history[1:], strict=False))
    assert result["loss"] < result["initial_loss"] - 0.5
    suffix = np.asarray(result["suffix"])
    assert allowed_tokens(tokenizer, config.vocab_size)[suffix].all()
    assert tokenizer.convert_tokens_to_ids(wrong) not in suffix  # the answer itself is off limits
    assert retokenizes(tokenizer, suffix[None])[0]
    again = gcg(params, config, tokenizer, attack, GCGConfig(suffix_length=6, top_k=32, candidates=64, steps=15,
                                                             stop_on_success=False))
    assert again["suffix"] == result["suffix"]  # seeded


def test_embedding_attack_forces_a_target(base_run, world_dir):
    lm = load_model(base_run)
    prompt, wrong = planted(world_dir)
    attack = build_attack_batch(lm.tokenizer, [prompt], [wrong], suffix_length=4)
    result = embed_attack(lm.params, lm.config, lm.tokenizer, attack, EmbedAttackConfig(steps=100))
    assert result["success"] == [True] and result["loss"] < result["initial_loss"]


def test_bad_attack_inputs(world_model):
    tokenizer, _, _ = world_model
    with pytest.raises(UserError, match="--suffix-length must be >= 1"):
        build_attack_batch(tokenizer, ["q?"], ["a"], suffix_length=0)
    with pytest.raises(UserError, match="at least one prompt"):
        build_attack_batch(tokenizer, [], [], suffix_length=3)
    with pytest.raises(UserError, match="longer than the model's context"):
        build_attack_batch(tokenizer, ["q " * 30], ["a"], suffix_length=5, max_length=16)
    with pytest.raises(UserError, match="candidates must be >= 1"):
        GCGConfig(candidates=0)
    with pytest.raises(UserError, match="loss 'nll'"):
        GCGConfig(loss="nll")


def test_representation_loss_is_the_hidden_state_distance(hf_and_ours):
    _, lm = hf_and_ours
    attack = _manual_batch()
    cfg = GCGConfig(suffix_length=4, loss="representation", layer=0)
    ref = reference_hidden(lm.params, lm.config, attack, layer=0)
    # the reference: layer-0 output at the last prompt token of the prompt alone
    rows = []
    for row in range(2):
        end = int(attack.suffix_positions[row, 0])
        alone = llama.apply(lm.params, lm.config, jnp.asarray(attack.input_ids[row:row + 1, :end]),
                            hidden_layers=(0,), return_logits=False).hidden[0]
        rows.append(np.asarray(alone[0, -1]))
    np.testing.assert_allclose(np.asarray(ref), np.stack(rows), rtol=1e-4, atol=1e-5)
    suffix = jnp.asarray([[5, 9, 11, 40]])
    loss = float(candidate_losses(lm.params, lm.config, attack, cfg, suffix, ref)[0])
    full = attack.with_suffixes(suffix)
    hidden = llama.apply(lm.params, lm.config, full["input_ids"], full["attention_mask"], hidden_layers=(0,),
                         return_logits=False).hidden[0]
    at = np.asarray(hidden)[np.arange(2), attack.answer_positions]
    assert loss == pytest.approx(float(np.mean((at - np.asarray(ref)) ** 2, axis=-1).mean()), rel=1e-4)
    grad_loss, grad = token_gradients(lm.params, lm.config, attack, cfg, suffix[0], ref)
    assert float(grad_loss) == pytest.approx(loss, rel=1e-4) and np.isfinite(np.asarray(grad)).all()
