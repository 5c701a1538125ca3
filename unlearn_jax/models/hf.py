"""Hugging Face model directories <-> our parameter pytree.

A model directory is ``config.json`` + ``model.safetensors`` (or shards with
``model.safetensors.index.json``) + tokenizer files. We read configs and tokenizers through
transformers, tensors through safetensors (never pickle), and map names by rule:
``model.layers.3.self_attn.q_proj.weight`` <-> ``layers_3/self_attn/q_proj/kernel`` (transposed),
``*.bias`` <-> ``bias``, norm ``weight`` <-> ``scale``, ``model.embed_tokens.weight`` <->
``embed_tokens/embedding``, ``lm_head.weight`` <-> ``lm_head/kernel`` (transposed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import transformers
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from unlearn_jax.errors import UserError
from unlearn_jax.fileio import atomic_directory, write_json_atomic
from unlearn_jax.models import llama
from unlearn_jax.models.llama import ModelConfig
from unlearn_jax.models.sharding import param_shardings

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
_HF_CONFIG_CLASSES = {
    "llama": transformers.LlamaConfig,
    "mistral": transformers.MistralConfig,
    "qwen2": transformers.Qwen2Config,
}
_IGNORED_TENSORS = re.compile(r".*rotary_emb\.inv_freq$")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def model_config_from_hf(hf_config, dtype: str = "float32", param_dtype: str = "float32") -> ModelConfig:
    """Map a transformers Llama/Mistral/Qwen2 config onto ours; refuse what the forward cannot do."""
    model_type = hf_config.model_type
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise UserError(f"hidden_act {hf_config.hidden_act!r} is not supported (only silu)")
    rope = dict(getattr(hf_config, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type not in llama.ROPE_TYPES:
        raise UserError(f"rope_type {rope_type!r} is not supported (supported: {', '.join(llama.ROPE_TYPES)})")
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise UserError("partial_rotary_factor != 1 is not supported")
    scaling_keys = {
        "linear": ("factor",),
        "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    }.get(rope_type, ())
    missing = [k for k in scaling_keys if k not in rope]
    if missing:
        raise UserError(f"rope_parameters of type {rope_type!r} lack {', '.join(missing)}")
    num_layers = hf_config.num_hidden_layers
    if model_type == "mistral":
        windows = (getattr(hf_config, "sliding_window", None),) * num_layers
    elif model_type == "qwen2":
        layer_types = getattr(hf_config, "layer_types", None) or ["full_attention"] * num_layers
        windows = tuple(hf_config.sliding_window if t == "sliding_attention" else None for t in layer_types)
    else:
        windows = (None,) * num_layers
    attention_bias = bool(getattr(hf_config, "attention_bias", False))
    num_heads = hf_config.num_attention_heads
    return ModelConfig(
        vocab_size=hf_config.vocab_size,
        hidden_size=hf_config.hidden_size,
        intermediate_size=hf_config.intermediate_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or num_heads,
        head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // num_heads,
        max_position_embeddings=hf_config.max_position_embeddings,
        rms_norm_eps=hf_config.rms_norm_eps,
        rope_theta=float(rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))),
        rope_type=rope_type,
        rope_scaling=tuple(sorted((k, float(rope[k])) for k in scaling_keys)),
        tie_word_embeddings=bool(hf_config.tie_word_embeddings),
        qkv_bias=model_type == "qwen2" or attention_bias,
        o_bias=model_type == "llama" and attention_bias,
        mlp_bias=model_type == "llama" and bool(getattr(hf_config, "mlp_bias", False)),
        sliding_windows=windows if any(w is not None for w in windows) else (),
        model_type=model_type,
        dtype=dtype,
        param_dtype=param_dtype,
        bos_token_id=getattr(hf_config, "bos_token_id", None),
        eos_token_id=getattr(hf_config, "eos_token_id", None),
        pad_token_id=getattr(hf_config, "pad_token_id", None),
    )


def hf_config_from_model_config(config: ModelConfig):
    """The transformers config of the same architecture (for models we create, e.g. by pretraining)."""
    if config.sliding_windows and len(set(config.sliding_windows)) != 1:
        raise UserError("per-layer sliding windows can only be saved for a model loaded from Hugging Face")
    rope = {"rope_type": config.rope_type, "rope_theta": config.rope_theta, **dict(config.rope_scaling)}
    kwargs = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters=rope,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    if config.model_type == "llama":
        kwargs.update(attention_bias=config.qkv_bias, mlp_bias=config.mlp_bias)
    elif config.model_type == "mistral":
        kwargs.update(sliding_window=config.sliding_windows[0] if config.sliding_windows else None)
    return _HF_CONFIG_CLASSES[config.model_type](**kwargs)


def hf_tensor_name(path: tuple[str, ...]) -> tuple[str, bool]:
    """Our parameter path -> (Hugging Face tensor name, whether the tensor is transposed)."""
    *modules, leaf = path
    if modules == ["embed_tokens"]:
        return "model.embed_tokens.weight", False
    if modules == ["lm_head"]:
        return "lm_head.weight", True
    parts = [m.replace("layers_", "layers.") for m in modules]
    name = ".".join(["model", *parts])
    if leaf == "kernel":
        return f"{name}.weight", True
    if leaf == "scale":
        return f"{name}.weight", False
    return f"{name}.{leaf}", False


def _flat(tree) -> dict[tuple[str, ...], object]:
    return {tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflat(flat: dict[tuple[str, ...], object]) -> dict:
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return tree


def abstract_params(config: ModelConfig):
    """Parameter shapes and dtypes without allocating them."""
    return jax.eval_shape(partial(llama.init_params, config), jax.random.key(0))


def _tensor_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file holding it (single file or index)."""
    index = model_dir / SAFE_INDEX
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"{index}: not a valid safetensors index ({e})") from None
        return {name: model_dir / file for name, file in weight_map.items()}
    single = model_dir / SAFE_WEIGHTS
    if not single.exists():
        others = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(p.name for p in model_dir.glob("*.pt"))
        hint = f" (found {', '.join(others)}: pickle is never loaded; convert to safetensors)" if others else ""
        raise UserError(f"{model_dir}: no {SAFE_WEIGHTS} or {SAFE_INDEX}{hint}")
    try:
        with safe_open(single, framework="np") as f:
            names = list(f.keys())
    except (SafetensorError, OSError) as e:
        raise UserError(f"{single}: not a valid safetensors file ({e})") from None
    return dict.fromkeys(names, single)


def read_safetensors(model_dir: Path, config: ModelConfig, shardings=None) -> dict:
    """Read every parameter of ``config``'s model from ``model_dir``, cast to the param dtype, and place
    it (with ``shardings``, a matching pytree of ``jax.sharding.Sharding``, straight onto its devices)."""
    files = _tensor_files(model_dir)
    expected = _flat(abstract_params(config))
    wanted = {path: hf_tensor_name(path) for path in expected}
    known = {name for name, _ in wanted.values()}
    unexpected = sorted(
        n for n in files if n not in known and not _IGNORED_TENSORS.match(n)
        and not (config.tie_word_embeddings and n == "lm_head.weight")
    )
    if unexpected:
        raise UserError(f"{model_dir}: tensors this architecture does not have: {', '.join(unexpected[:5])}")
    flat_shardings = _flat(shardings) if shardings is not None else {}
    handles: dict[Path, object] = {}
    params = {}
    try:
        for path, (name, transpose) in wanted.items():
            if name not in files:
                raise UserError(f"{model_dir}: tensor {name} is missing")
            file = files[name]
            if not file.exists():
                raise UserError(f"{file}: listed in the index but missing")
            if file not in handles:
                handles[file] = safe_open(file, framework="np").__enter__()
            array = handles[file].get_tensor(name)
            if transpose:
                array = array.T
            shape = expected[path].shape
            if array.shape != shape:
                raise UserError(f"{file}: tensor {name} has shape {array.shape[::-1] if transpose else array.shape}, "
                                f"the config implies {shape[::-1] if transpose else shape}")
            array = np.asarray(array).astype(expected[path].dtype)
            params[path] = jax.device_put(array, flat_shardings.get(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{model_dir}: a safetensors file is corrupt or truncated ({e})") from None
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)
    return _unflat(params)


def write_safetensors(model_dir: Path, params, dtype: str, max_shard_bytes: int | None = None) -> None:
    """Write params as Hugging Face tensors; more than ``max_shard_bytes`` → shards + index."""
    tensors = {}
    for path, leaf in _flat(params).items():
        name, transpose = hf_tensor_name(path)
        array = np.asarray(jax.device_get(leaf)).astype(_DTYPES[dtype])
        tensors[name] = np.ascontiguousarray(array.T if transpose else array)
    total = sum(a.nbytes for a in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, str(model_dir / SAFE_WEIGHTS), metadata={"format": "pt"})
        return
    shards: list[dict] = [{}]
    for name in sorted(tensors):
        if shards[-1] and sum(a.nbytes for a in shards[-1].values()) + tensors[name].nbytes > max_shard_bytes:
            shards.append({})
        shards[-1][name] = tensors[name]
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(model_dir / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    write_json_atomic(model_dir / SAFE_INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})


_forward = jax.jit(llama.apply, static_argnums=(1,), static_argnames=("hidden_layers", "last_layer", "return_logits"))


@dataclasses.dataclass
class LM:
    """A loaded model: our config, the parameter pytree, the tokenizer (None if the directory has none)
    and the transformers config it came from (kept so saving round-trips every field)."""

    config: ModelConfig
    params: dict
    tokenizer: object | None = None
    hf_config: object | None = None

    def logits(self, input_ids, attention_mask=None) -> jax.Array:
        """input_ids [B, S] → float32 logits [B, S, V]."""
        input_ids = jnp.asarray(input_ids)
        if attention_mask is not None:
            attention_mask = jnp.asarray(attention_mask)
        return _forward(self.params, self.config, input_ids, attention_mask).logits

    def save_hf(self, out_dir: str | os.PathLike, dtype: str | None = None, max_shard_bytes: int | None = None) -> Path:
        """Write a Hugging Face model directory (atomically) that transformers loads as the same model."""
        dtype = dtype or self.config.param_dtype
        if dtype not in _DTYPES:
            raise UserError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
        hf_config = self.hf_config if self.hf_config is not None else hf_config_from_model_config(self.config)
        hf_config = type(hf_config).from_dict(hf_config.to_dict())
        hf_config.dtype = dtype
        hf_config.architectures = [type(hf_config).__name__.replace("Config", "ForCausalLM")]
        with atomic_directory(out_dir) as tmp:
            hf_config.save_pretrained(tmp)
            write_safetensors(tmp, self.params, dtype, max_shard_bytes)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
        return Path(out_dir)


def resolve_model_dir(path_or_id: str | os.PathLike) -> Path:
    """A model directory, a run directory (its ``model/``) or a hub id (downloaded when online)."""
    path = Path(path_or_id)
    if path.is_dir():
        if (path / "config.json").exists():
            return path
        if (path / "model" / "config.json").exists():
            return path / "model"
        raise UserError(f"{path}: not a model directory (no config.json) nor a run directory (no model/config.json)")
    if path.exists():
        raise UserError(f"{path}: is a file; a model is a directory or a hub id")
    text = str(path_or_id)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        raise UserError(f"{text}: no such model directory")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"])
    except Exception as e:  # noqa: BLE001 — any hub failure is the same message to the user
        raise UserError(f"{text}: no such local directory, and the hub is unreachable or has no such model "
                        f"({type(e).__name__}); pass a local model directory") from None
    return Path(local)


def load_model(
    path_or_id: str | os.PathLike,
    *,
    dtype: str = "float32",
    param_dtype: str = "float32",
    mesh=None,
    with_tokenizer: bool = True,
) -> LM:
    """Load a Hugging Face Llama/Mistral/Qwen2 model directory (or run directory, or hub id) as an LM.

    ``dtype`` is the compute dtype, ``param_dtype`` the storage dtype (weights are cast on load).
    ``mesh``: place every parameter straight onto its shards (the table in ``sharding.py``).
    """
    for name, value in (("dtype", dtype), ("param_dtype", param_dtype)):
        if value not in _DTYPES:
            raise UserError(f"{name} {value!r} is not one of {', '.join(_DTYPES)}")
    model_dir = resolve_model_dir(path_or_id)
    config_file = model_dir / "config.json"
    try:
        raw = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{config_file}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise UserError(f"{config_file}: has no model_type")
    if raw["model_type"] not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"{config_file}: model_type {raw['model_type']!r} is not supported "
                        f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    try:
        hf_config = transformers.AutoConfig.from_pretrained(model_dir)
    except Exception as e:  # noqa: BLE001 — transformers raises many types for a bad config
        raise UserError(f"{config_file}: transformers cannot read it ({e})") from None
    config = model_config_from_hf(hf_config, dtype=dtype, param_dtype=param_dtype)
    shardings = param_shardings(abstract_params(config), mesh) if mesh is not None else None
    params = read_safetensors(model_dir, config, shardings)
    tokenizer = load_tokenizer(model_dir, config) if with_tokenizer else None
    return LM(config=config, params=params, tokenizer=tokenizer, hf_config=hf_config)


def load_tokenizer(model_dir: Path, config: ModelConfig):
    """The directory's tokenizer (None if it has none), checked against the model's vocabulary: an id
    past the embedding table would silently read garbage."""
    if not any((model_dir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{model_dir}: cannot load its tokenizer ({e})") from None
    if len(tokenizer) > config.vocab_size:
        raise UserError(f"{model_dir}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                        f"is {config.vocab_size}: they do not belong together")
    return tokenizer
