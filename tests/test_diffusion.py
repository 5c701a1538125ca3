"""The diffusion part: schedule and DDIM step against hand computation, the erasure objectives' loss and
gradient against PyTorch on a tiny net (stop-gradient included), and on a small trained DDPM (the
``test`` preset, trained once per session): erasing a concept, the soft-prompt attack on a planted weak
erasure, sequential requests, and bad inputs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from unlearn_jax.diffusion import ddpm, images, objectives, unet
from unlearn_jax.diffusion import runs as dm

SCHEDULE = ddpm.Schedule(kind="linear")


def test_cosine_schedule_by_hand():
    u = np.arange(1001) / 1000
    f = np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    ab = np.cumprod(1 - np.clip(1 - f[1:] / f[:-1], 0, 0.999))
    np.testing.assert_allclose(np.asarray(ddpm.Schedule().alphas_cumprod()), ab, rtol=2e-4, atol=1e-7)
    assert ab[0] > 0.9999 and ab[-1] < 1e-6


def test_schedule_and_forward_process_by_hand():
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    np.testing.assert_allclose(np.asarray(SCHEDULE.alphas_cumprod()), ab, rtol=1e-5)
    assert ab[0] == pytest.approx(0.9999) and ab[1] == pytest.approx(0.9999 * (1 - (1e-4 + 0.0199 / 999)))
    x0, noise, t = jnp.full((1, 2, 2, 3), 0.5), jnp.full((1, 2, 2, 3), -1.0), jnp.array([300])
    expected = np.sqrt(ab[300]) * 0.5 - np.sqrt(1 - ab[300])
    np.testing.assert_allclose(np.asarray(ddpm.q_sample(SCHEDULE, x0, t, noise)), expected, rtol=1e-5)


def test_ddim_step_by_hand():
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    x_t, eps = 0.3, 0.8
    x0 = np.clip((x_t - np.sqrt(1 - ab[500]) * eps) / np.sqrt(ab[500]), -1, 1)
    want = np.sqrt(ab[250]) * x0 + np.sqrt(1 - ab[250]) * eps
    got = ddpm.ddim_step(SCHEDULE, jnp.array(x_t), jnp.array(eps), jnp.array(500), jnp.array(250))
    assert float(got) == pytest.approx(want, rel=1e-5)
    last = ddpm.ddim_step(SCHEDULE, jnp.array(x_t), jnp.array(eps), jnp.array(10), jnp.array(-1))
    assert float(last) == pytest.approx(np.clip((x_t - np.sqrt(1 - ab[10]) * eps) / np.sqrt(ab[10]), -1, 1), rel=1e-5)
    assert list(ddpm.ddim_timesteps(SCHEDULE, 5)) == [999, 749, 500, 250, 0]


# A tiny denoiser, written twice: ε(x_t, t, tokens) = x_t W + E[tokens].sum + b·t/1000 (pixels mixed by W).
def _eps_jax(p, x_t, t, tokens):
    return x_t @ p["w"] + p["e"][tokens].sum(1)[:, None, None, :] + p["b"] * (t / 1000.0)[:, None, None, None]


def _eps_torch(p, x_t, t, tokens):
    return x_t @ p["w"] + p["e"][tokens].sum(1)[:, None, None, :] + p["b"] * (t / 1000.0)[:, None, None, None]


def _tiny_case(seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(3, 3)) * 0.5, "e": rng.normal(size=(len(images.VOCAB), 3)),
              "b": rng.normal(size=(3,))}
    n = 4
    forget = (rng.normal(size=(n, 2, 2, 3)), rng.integers(0, 1000, n), np.stack([rng.integers(1, 7, n),
                                                                                  rng.integers(7, 10, n)], 1))
    retain = (rng.normal(size=(n, 2, 2, 3)), rng.integers(0, 1000, n), np.stack([rng.integers(1, 7, n),
                                                                                  rng.integers(7, 10, n)], 1),
              rng.normal(size=(n, 2, 2, 3)))
    return params, forget, retain


def _to(x, lib):
    if lib == "jax":
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.int32 if a.dtype.kind == "i" else jnp.float32), x)
    return jax.tree_util.tree_map(lambda a: torch.tensor(a, dtype=torch.long if a.dtype.kind == "i" else torch.float64,
                                                         requires_grad=a.dtype.kind == "f" and a.ndim <= 2), x)


def _torch_grads(loss, params):
    loss.backward()
    return {k: v.grad.numpy() for k, v in params.items()}


@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_seed_objective_loss_and_gradient_match_pytorch(beta):
    params, forget, retain = _tiny_case()
    anchored = forget[2].copy()
    anchored[:, 0] = images.TOKEN[images.NULL]
    loss, _ = objectives.seed_objective(_eps_jax, _to(params, "jax"), _to(forget, "jax"), jnp.asarray(anchored),
                                        _to(retain, "jax"), beta)
    grads = jax.grad(lambda p: objectives.seed_objective(_eps_jax, p, _to(forget, "jax"), jnp.asarray(anchored),
                                                         _to(retain, "jax"), beta)[0])(_to(params, "jax"))
    tp = _to(params, "torch")
    (x_t, t, tokens), (xr, tr, tok_r, noise_r) = _to(forget, "torch"), _to(retain, "torch")
    target = _eps_torch(tp, x_t, t, torch.tensor(anchored)).detach()  # the paper's stop-gradient on c′
    ref = ((target - _eps_torch(tp, x_t, t, tokens)) ** 2).mean() + beta * (
        (_eps_torch(tp, xr, tr, tok_r) - noise_r) ** 2).mean()
    assert float(loss) == pytest.approx(ref.item(), rel=1e-4)
    for k, g in _torch_grads(ref, tp).items():
        np.testing.assert_allclose(np.asarray(grads[k]), g, rtol=1e-4, atol=1e-6)


def test_stop_gradient_really_stops_the_anchor_branch():
    params, forget, retain = _tiny_case(1)
    anchored = forget[2].copy()
    anchored[:, 0] = images.TOKEN["green"]
    p, f, r = _to(params, "jax"), _to(forget, "jax"), _to(retain, "jax")
    grads = jax.grad(lambda q: objectives.seed_objective(_eps_jax, q, f, jnp.asarray(anchored), r, 0.0)[0])(p)
    # the anchor token's embedding appears only in the c′ branch: it must get no gradient
    assert float(jnp.abs(grads["e"][images.TOKEN["green"]]).max()) == 0.0
    x_t, t, tokens = f

    def without_sg(q):
        return jnp.mean((_eps_jax(q, x_t, t, jnp.asarray(anchored)) - _eps_jax(q, x_t, t, tokens)) ** 2)

    assert float(jnp.abs(jax.grad(without_sg)(p)["e"][images.TOKEN["green"]]).max()) > 1e-3


@pytest.mark.parametrize("eta, beta", [(1.0, 0.0), (0.5, 2.0)])
def test_esd_objective_loss_and_gradient_match_pytorch(eta, beta):
    params, forget, retain = _tiny_case(2)
    original = jax.tree_util.tree_map(lambda a: a + 0.3, params)
    loss, _ = objectives.esd_objective(_eps_jax, _to(params, "jax"), _to(original, "jax"), _to(forget, "jax"), eta,
                                       _to(retain, "jax"), beta)
    grads = jax.grad(lambda p: objectives.esd_objective(_eps_jax, p, _to(original, "jax"), _to(forget, "jax"), eta,
                                                        _to(retain, "jax"), beta)[0])(_to(params, "jax"))
    tp, to = _to(params, "torch"), _to(original, "torch")
    (x_t, t, tokens), (xr, tr, tok_r, noise_r) = _to(forget, "torch"), _to(retain, "torch")
    with torch.no_grad():
        e_null = _eps_torch(to, x_t, t, torch.zeros_like(tokens))
        target = e_null - eta * (_eps_torch(to, x_t, t, tokens) - e_null)
    ref = ((_eps_torch(tp, x_t, t, tokens) - target) ** 2).mean()
    if beta > 0:
        ref = ref + beta * ((_eps_torch(tp, xr, tr, tok_r) - noise_r) ** 2).mean()
    assert float(loss) == pytest.approx(ref.item(), rel=1e-4)
    for k, g in _torch_grads(ref, tp).items():
        np.testing.assert_allclose(np.asarray(grads[k]), g, rtol=1e-4, atol=1e-6)


def test_parameter_groups_split_the_unet():
    from unlearn_jax.engine.state import param_paths, split_params

    params = unet.init_params(unet.UNetConfig(channels=(8, 16), groups=4), jax.random.PRNGKey(0))
    paths = set(param_paths(params))
    groups = {name: set(param_paths(split_params(params, regex)[0])) for name, regex in objectives.PARAM_GROUPS.items()}
    assert groups["xattn"] and all("/cross_attn_" in p for p in groups["xattn"])
    assert groups["xattn"] | groups["non-xattn"] == groups["full"] and not groups["xattn"] & groups["non-xattn"]
    assert paths - groups["full"] == {p for p in paths if p.startswith("text/")}  # the prompt encoder stays frozen


def test_render_draws_the_labelled_colours():
    x, tokens, colour, background = images.batch(jax.random.PRNGKey(0), 64)
    x = np.asarray(x)
    fg = np.asarray(list(images.COLOURS.values()))[np.asarray(colour)]
    bg = np.asarray(list(images.BACKGROUNDS.values()))[np.asarray(background)]
    for i in range(64):
        close_fg = np.abs(x[i] - fg[i]).max(-1) < 0.15
        close_bg = np.abs(x[i] - bg[i]).max(-1) < 0.15
        assert 12 <= close_fg.sum() <= 81 and close_bg.sum() >= 256 - 81 - 8
    assert (np.asarray(tokens) == np.asarray(images.prompt_tokens(colour, background))).all()
    _, _, c, b = images.batch(jax.random.PRNGKey(1), 200, exclude=(images.concept("red"), images.concept("green"),
                                                                    images.concept("white")))
    assert set(np.asarray(c).tolist()) == {2, 3, 4, 5} and set(np.asarray(b).tolist()) == {0, 2}


@pytest.fixture(scope="session")
def ddpm_run(pretrain_cache, tmp_path_factory):
    """The ``test`` preset DDPM and its evaluator (trained once per session, cached)."""
    out = tmp_path_factory.mktemp("ddpm") / "base"
    dm.train(str(out), preset="test", quiet=True)
    return out


def test_base_model_draws_its_prompts(ddpm_run):
    run = json.loads((ddpm_run / "run.json").read_text())
    quality = run["metrics"]
    assert quality["accuracy"]["colour"] >= 0.6 and quality["accuracy"]["background"] >= 0.6, quality["accuracy"]
    assert quality["concept_rate"]["red"] >= 0.5
    assert (ddpm_run / "samples.png").stat().st_size > 0
    loaded = dm.load_model(ddpm_run)
    assert unet.num_params(loaded.params) == run["model"]["num_params"]


@pytest.fixture(scope="session")
def erased_red(ddpm_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddpm") / "red"
    return out, dm.unlearn(str(ddpm_run), "red", str(out), objectives.EraseConfig(steps=150), quiet=True)


def test_erasing_a_concept_lowers_its_rate_and_keeps_the_rest(erased_red):
    _, run = erased_red
    before, after = run["metrics"]["before"], run["metrics"]["after"]
    assert before["ua"]["red"] <= 0.5 and after["ua"]["red"] >= 0.8, (before["ua"], after["ua"])
    assert after["ira"] >= before["ira"] - 0.2 and after["cra"] >= before["cra"] - 0.2


def test_attack_restores_a_planted_weak_erasure(ddpm_run, tmp_path):
    base = dm.load_model(ddpm_run)
    red, null = images.TOKEN["red"], images.TOKEN[images.NULL]
    planted = jax.tree_util.tree_map(lambda a: a, base.params)  # only the word is cut: red's embedding := <null>'s
    table = planted["text"]["token_embed"]["embedding"]
    planted["text"]["token_embed"]["embedding"] = table.at[red].set(table[null])
    dm.save_model(tmp_path / "planted", dm.DiffusionModel(planted, base.config, base.schedule, base.evaluator))
    result = dm.attack(str(tmp_path / "planted"), str(ddpm_run), "red", str(tmp_path / "attack"), seed=0, quiet=True)
    rate = result["concept_rate"]
    assert rate["unlearned"] <= 0.3 and rate["attacked"] >= rate["unlearned"] + 0.3, rate
    assert (tmp_path / "attack" / "samples.png").exists()


def test_sequential_requests_fill_the_ua_matrix(erased_red, ddpm_run, tmp_path):
    result = dm.sequential(str(ddpm_run), ["red", "green"], str(tmp_path / "seq"),
                           objectives.EraseConfig(steps=40), quiet=True)
    matrix = result["ua_matrix"]
    assert len(matrix) == 2 and matrix[0][1] is None and all(0 <= v <= 1 for v in (matrix[0][0], *matrix[1]))
    assert (tmp_path / "seq" / "ua_matrix.png").exists() and (tmp_path / "seq" / "request_2" / "run.json").exists()


@pytest.mark.parametrize("args, message", [
    (["unlearn", "--concept", "crimson"], "unknown concept 'crimson'"),
    (["unlearn", "--concept", "red", "--anchor", "white"], "--anchor 'white': choose <null> or another colour"),
    (["unlearn", "--concept", "red", "--params", "attention"], "--params 'attention': choose one of"),
    (["unlearn", "--concept", "red", "--objective", "ga"], "--objective 'ga': choose one of"),
    (["sequential", "--concepts", "red"], "--concepts: give at least two distinct concepts"),
    (["attack", "--concept", "purple", "--original", "x"], "unknown concept 'purple'"),
])
def test_diffusion_bad_inputs(ddpm_run, tmp_path, capsys, args, message):
    from unlearn_jax.cli import main

    assert main(["diffusion", *args, "--model", str(ddpm_run), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_diffusion_model_must_exist(tmp_path, capsys):
    from unlearn_jax.cli import main

    out = str(tmp_path / "o")
    assert main(["diffusion", "unlearn", "--model", str(tmp_path), "--concept", "red", "--out", out]) == 2
    assert "not a diffusion model" in capsys.readouterr().err


def test_erasure_is_deterministic_per_seed(ddpm_run, tmp_path):
    from safetensors.numpy import load_file

    def run(name, seed):
        dm.unlearn(str(ddpm_run), "blue", str(tmp_path / name), objectives.EraseConfig(steps=5), seed=seed,
                   samples_per_prompt=2, quiet=True)
        result = json.loads((tmp_path / name / "run.json").read_text())
        return result["metrics"], load_file(str(tmp_path / name / "model" / "params.safetensors"))

    (m1, p1), (m2, p2), (_, p3) = run("a", 0), run("b", 0), run("c", 1)
    assert m1 == m2 and all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert any(not np.array_equal(p1[k], p3[k]) for k in p1)
