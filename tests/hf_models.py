"""Tiny random Hugging Face models, built by transformers in PyTorch: the oracle for parity tests."""

import torch
import transformers

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=1024, rms_norm_eps=1e-5)


def make_hf_model(kind: str, **overrides):
    """kind: llama | llama3_rope | llama_tied | llama_bias | mistral | mistral_window | qwen2 | qwen2_tied."""
    torch.manual_seed(0)
    kw = dict(TINY)
    if kind.startswith("llama"):
        cls, model_cls = transformers.LlamaConfig, transformers.LlamaForCausalLM
        kw["num_key_value_heads"] = 4
        if kind == "llama3_rope":
            kw["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 64}
        if kind == "llama_tied":
            kw["tie_word_embeddings"] = True
        if kind == "llama_bias":
            kw.update(attention_bias=True, mlp_bias=True)
    elif kind.startswith("mistral"):
        cls, model_cls = transformers.MistralConfig, transformers.MistralForCausalLM
        kw.update(num_key_value_heads=2, sliding_window=64 if kind == "mistral_window" else None)
    elif kind.startswith("qwen2"):
        cls, model_cls = transformers.Qwen2Config, transformers.Qwen2ForCausalLM
        kw.update(num_key_value_heads=1, tie_word_embeddings=kind == "qwen2_tied")
    else:
        raise ValueError(kind)
    kw.update(overrides)
    config = cls(**kw)
    config._attn_implementation = "eager"
    model = model_cls(config).eval()
    with torch.no_grad():  # random biases/norm scales, so a wrong mapping cannot hide behind zeros and ones
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(1.0 if "norm" in name else 0.0, 0.1)
    return model
