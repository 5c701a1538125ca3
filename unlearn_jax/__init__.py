"""unlearn-jax: machine unlearning for foundation models, as pure jitted JAX functions, with the
instruments that show when unlearning only hides knowledge.

Public names are imported lazily, so ``unlearn-jax --help`` and data-only code do not pay for JAX.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "UserError": "unlearn_jax.errors",
    "LM": "unlearn_jax.models.hf",
    "load_model": "unlearn_jax.models.hf",
    "ModelConfig": "unlearn_jax.models.llama",
    "apply": "unlearn_jax.models.llama",
    "init_params": "unlearn_jax.models.llama",
    "logit_lens": "unlearn_jax.models.llama",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'unlearn_jax' has no attribute {name!r}")
