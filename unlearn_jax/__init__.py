"""unlearn-jax: machine unlearning for foundation models, as pure jitted JAX functions, with the
instruments that show when unlearning only hides knowledge."""

from unlearn_jax.errors import UserError
from unlearn_jax.models.hf import LM, load_model
from unlearn_jax.models.llama import ModelConfig, apply, init_params, logit_lens

__version__ = "0.1.0"
__all__ = ["LM", "ModelConfig", "UserError", "apply", "init_params", "load_model", "logit_lens"]
