"""The evaluator: a small CNN trained on real procedural images that names an image's colour and
background (two softmax heads) and gives 64-d features for the Fréchet distance (an FID proxy).

Training images get a random contrast (× U(0.6, 1)) and extra noise (σ ~ U(0, 0.15)), so slightly
washed-out or noisy generations are still judged by their colour, not rejected as off-distribution.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearn_jax.diffusion import images

FEATURES = 64


class Classifier(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.avg_pool(nn.relu(nn.Conv(16, (3, 3), name="conv1")(x)), (2, 2), (2, 2))
        h = nn.avg_pool(nn.relu(nn.Conv(32, (3, 3), name="conv2")(h)), (2, 2), (2, 2))
        features = nn.relu(nn.Dense(FEATURES, name="features")(h.reshape(h.shape[0], -1)))
        heads = {axis: nn.Dense(len(words), name=f"head_{axis}")(features) for axis, words in images.AXES.items()}
        return features, heads


def augment(key: jax.Array, x: jax.Array) -> jax.Array:
    k_c, k_s, k_n = jax.random.split(key, 3)
    n = x.shape[0]
    contrast = jax.random.uniform(k_c, (n, 1, 1, 1), minval=0.6, maxval=1.0)
    sigma = jax.random.uniform(k_s, (n, 1, 1, 1), maxval=0.15)
    return jnp.clip(x * contrast + sigma * jax.random.normal(k_n, x.shape), -1.0, 1.0)


def train(seed: int, steps: int = 400, batch_size: int = 128, lr: float = 2e-3) -> dict:
    """Evaluator parameters trained on real images from ``seed``."""
    model = Classifier()
    key = jax.random.PRNGKey(seed)
    params = model.init(key, jnp.zeros((1, images.SIZE, images.SIZE, 3)))["params"]
    optimizer = optax.adam(lr)

    def loss_fn(params, key):
        k_batch, k_aug = jax.random.split(key)
        x, _, colour, background = images.batch(k_batch, batch_size)
        _, heads = model.apply({"params": params}, augment(k_aug, x))
        labels = {"colour": colour, "background": background}
        return sum(optax.softmax_cross_entropy_with_integer_labels(heads[a], labels[a]).mean() for a in heads)

    @jax.jit
    def step(params, opt_state, key):
        grads = jax.grad(loss_fn)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = optimizer.init(params)
    for i in range(steps):
        params, opt_state = step(params, opt_state, jax.random.fold_in(key, i + 1))
    return jax.device_get(params)


@jax.jit
def _predict(params, x):
    features, heads = Classifier().apply({"params": params}, x)
    return features, {axis: jnp.argmax(logits, -1) for axis, logits in heads.items()}


def predict(params: dict, x: jax.Array, batch_size: int = 512) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(features [N, 64], {axis: predicted index [N]}) for images [N, 16, 16, 3]."""
    feats, preds = [], {axis: [] for axis in images.AXES}
    for begin in range(0, x.shape[0], batch_size):
        f, p = jax.device_get(_predict(params, x[begin : begin + batch_size]))
        feats.append(f)
        for axis in preds:
            preds[axis].append(p[axis])
    return np.concatenate(feats), {axis: np.concatenate(v) for axis, v in preds.items()}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½) between two feature sets [N, D] (FID's formula)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    jitter = 1e-6 * np.eye(a.shape[1])  # as pytorch-fid does for near-singular products
    cov_a, cov_b = np.cov(a, rowvar=False) + jitter, np.cov(b, rowvar=False) + jitter
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * root))
