"""Test session setup: 8 fake CPU devices (set before JAX starts) and shared tiny fixtures."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory):
    """The default embedded world (seed 0, 100 people), built once per session."""
    from unlearn_jax.data.world import build_world

    path = tmp_path_factory.mktemp("world") / "w"
    build_world(path, seed=0)
    return path


@pytest.fixture(scope="session")
def pretrain_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("UNLEARN_JAX_CACHE")
    os.environ["UNLEARN_JAX_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("UNLEARN_JAX_CACHE")
    else:
        os.environ["UNLEARN_JAX_CACHE"] = old


@pytest.fixture(scope="session")
def base_run(world_dir, pretrain_cache, tmp_path_factory):
    """The tiny base model trained on the whole default world (once per session)."""
    from unlearn_jax.runs.pretrain import pretrain

    out = tmp_path_factory.mktemp("runs") / "base"
    pretrain(str(world_dir), str(out), quiet=True)
    return out


@pytest.fixture(scope="session")
def gold_run(world_dir, pretrain_cache, tmp_path_factory):
    """The tiny gold model: same recipe, forget split excluded (once per session)."""
    from unlearn_jax.runs.pretrain import pretrain

    out = tmp_path_factory.mktemp("runs") / "gold"
    pretrain(str(world_dir), str(out), exclude=("forget",), quiet=True)
    return out
