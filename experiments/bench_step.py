"""Unlearning update steps: ours (jitted JAX) vs the PyTorch step open-unlearning performs, side by side.

Methods:
  plain  the same computation on both sides: a GradDiff step (forward + backward on a forget and a
         retain batch, AdamW update of every weight);
  npo    PyTorch re-runs the frozen reference on the forget batch every step; we cache S_ref once;
  rmu    PyTorch runs the full model (all layers and the LM head, output_hidden_states) on forget and
         retain, the frozen model on retain, and backpropagates to every weight; we cache the frozen
         retain activations and the frozen prefix, run only layers lowest-trainable..steered, and
         differentiate only the trainable down-projections.
Both sides use the same weights and batches; timings are medians of interleaved repeats (neighbours'
load on a shared 2-core machine swings single measurements by 1.5-2x), with an idle gap after each call.
MFU = model FLOPs / time / measured f32 matmul peak, with model FLOPs = 6·N·tokens + attention
(12·L·S·D per token, MaxText's definition) for the work the step must do: the whole model for plain
and npo (both sides), layers first..steered for rmu (ours).

The last line printed is one JSON object:
{"results": [{"config", "method", "jax_ms", "torch_ms", "ratio", "mfu"}, ...], "peak_gflops", ...}
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from unlearn_jax import load_model
from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.engine.optim import OptimizerConfig, make_optimizer
from unlearn_jax.engine.state import init_state, split_params
from unlearn_jax.engine.step import make_step
from unlearn_jax.objectives import METHODS, Hyper
from unlearn_jax.objectives.reference import layer_outputs, reference_nll
from unlearn_jax.objectives.rmu import control_vector
from unlearn_jax.runs.unlearn import default_trainable

SETTLE_S = 0.5  # idle gap between timed calls: OpenMP/Eigen worker threads spin-wait after a parallel
# region and would otherwise steal the 2 cores from the other framework's next step

CONFIGS = {
    "tiny": dict(model=dict(vocab_size=384, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=4), seq=32, batch=32),
    "medium": dict(model=dict(vocab_size=8192, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                              num_attention_heads=8, num_key_value_heads=8), seq=256, batch=8),
}


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> dict:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - start)
    ta = torch.tensor(np.asarray(a))
    torch_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ta @ ta
        torch_times.append(time.perf_counter() - start)
    flops = 2 * n**3
    return {"jax": flops / min(times) / 1e9, "torch": flops / min(torch_times) / 1e9}


def token_set(rng, vocab: int, batch: int, seq: int) -> TokenSet:
    ids = rng.integers(3, vocab, size=(batch, seq)).astype(np.int32)
    ones = np.ones_like(ids)
    loss = ones.copy()
    loss[:, 0] = 0
    return TokenSet(ids, ones, loss, tuple(map(str, range(batch))))


def model_flops(n_params: int, layers: int, d: int, seq: int, tokens: int) -> float:
    return 6.0 * n_params * tokens + 12.0 * layers * seq * d * tokens


# ---- PyTorch side: the steps open-unlearning performs ------------------------------------------------


def torch_nll(model, ids, mask, reduce_tokens=True):
    logits = model(input_ids=ids).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    m = mask[:, 1:]
    return -(logp * m).sum() / m.sum() if reduce_tokens else -(logp * m).sum(-1)


def torch_step_fn(method, model, ref_model, forget, retain, rmu_layer, trainable_names, control):
    f_ids, f_mask = torch.tensor(forget.input_ids, dtype=torch.long), torch.tensor(forget.loss_mask).float()
    r_ids, r_mask = torch.tensor(retain.input_ids, dtype=torch.long), torch.tensor(retain.loss_mask).float()
    params = [p for n, p in model.named_parameters() if method != "rmu" or n in trainable_names]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    u = torch.tensor(control)

    def step():
        optimizer.zero_grad()
        if method == "plain":
            loss = -torch_nll(model, f_ids, f_mask) + torch_nll(model, r_ids, r_mask)
        elif method == "npo":
            with torch.no_grad():
                s_ref = torch_nll(ref_model, f_ids, f_mask, reduce_tokens=False)
            s = torch_nll(model, f_ids, f_mask, reduce_tokens=False)
            loss = (2 / 0.1) * torch.nn.functional.softplus(0.1 * (s_ref - s)).mean() + \
                torch_nll(model, r_ids, r_mask)
        else:
            h_f = model(input_ids=f_ids, output_hidden_states=True).hidden_states[rmu_layer + 1]
            h_r = model(input_ids=r_ids, output_hidden_states=True).hidden_states[rmu_layer + 1]
            with torch.no_grad():
                target = ref_model(input_ids=r_ids, output_hidden_states=True).hidden_states[rmu_layer + 1]
            loss = ((h_f - u) ** 2).mean() + 10.0 * ((h_r - target) ** 2).mean()
        loss.backward()
        optimizer.step()

    return step


# ---- JAX side: our step --------------------------------------------------------------------------------


def jax_step_fn(method, lm, forget, retain, rmu_layer):
    params, config = lm.params, lm.config
    name = "graddiff" if method == "plain" else method
    hp = Hyper(alpha=10.0 if method == "rmu" else 1.0, beta=0.1, rmu_layer=rmu_layer)
    regex = default_trainable(METHODS[name], rmu_layer)
    trainable, frozen_params = split_params(params, regex)
    frozen = {}
    if name == "npo":
        frozen["ref_nll"] = {"answer": jnp.asarray(reference_nll(params, config, forget))}
    if name == "rmu":
        first = max(0, rmu_layer - 2)
        frozen["control"] = jnp.asarray(control_vector(config.hidden_size, 20.0, 0))
        frozen["retain_target"] = jnp.asarray(layer_outputs(params, config, retain, rmu_layer))
        if first:
            frozen["forget_prefix"] = jnp.asarray(layer_outputs(params, config, forget, first - 1))
            frozen["retain_prefix"] = jnp.asarray(layer_outputs(params, config, retain, first - 1))
        hp = Hyper(alpha=10.0, rmu_layer=rmu_layer, rmu_first_layer=first)
    optimizer = make_optimizer(OptimizerConfig(lr=1e-5, max_grad_norm=0.0))
    step = make_step(lambda p, c, b, r: METHODS[name].loss(p, config, c, b["forget"], b["retain"], hp), optimizer)
    index = jnp.arange(len(forget), dtype=jnp.int32)
    batch = {"forget": {"answer": {k: jnp.asarray(v) for k, v in forget.rows(np.arange(len(forget))).items()},
                        "index": index},
             "retain": {**{k: jnp.asarray(v) for k, v in retain.rows(np.arange(len(retain))).items()},
                        "index": index}}
    holder = {"state": init_state(trainable, optimizer, 0)}

    def run():
        holder["state"], metrics = step(holder["state"], frozen_params, frozen, batch)
        jax.block_until_ready(holder["state"].params)

    return run


def bench(config_name: str, methods: list[str], repeats: int, peak: float) -> list[dict]:
    spec = CONFIGS[config_name]
    torch.manual_seed(0)
    hf_config = transformers.LlamaConfig(**spec["model"], max_position_embeddings=1024)
    model = transformers.LlamaForCausalLM(hf_config)
    ref_model = transformers.LlamaForCausalLM(hf_config).eval()
    ref_model.load_state_dict(model.state_dict())
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        lm = load_model(tmp, with_tokenizer=False)
    rng = np.random.default_rng(0)
    forget = token_set(rng, hf_config.vocab_size, spec["batch"], spec["seq"])
    retain = token_set(rng, hf_config.vocab_size, spec["batch"], spec["seq"])
    layers, d = hf_config.num_hidden_layers, hf_config.hidden_size
    rmu_layer = layers // 2
    trainable_names = {f"model.layers.{i}.mlp.down_proj.weight" for i in range(max(0, rmu_layer - 2), rmu_layer + 1)}
    control = control_vector(d, 20.0, 0)
    n_params = lm.config.num_params()
    tokens = 2 * spec["batch"] * spec["seq"]
    results = []
    for method in methods:
        ours = jax_step_fn(method, lm, forget, retain, rmu_layer)
        theirs = torch_step_fn(method, model, ref_model, forget, retain, rmu_layer, trainable_names, control)
        ours()
        theirs()
        jax_times, torch_times = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            ours()
            jax_times.append(time.perf_counter() - start)
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            theirs()
            torch_times.append(time.perf_counter() - start)
            time.sleep(SETTLE_S)
        jt, tt = statistics.median(jax_times), statistics.median(torch_times)
        if method == "rmu":
            first = max(0, rmu_layer - 2)
            per_layer = (n_params - 2 * hf_config.vocab_size * d) / layers
            flops = model_flops(per_layer * (rmu_layer - first + 1), rmu_layer - first + 1, d, spec["seq"], tokens)
        else:
            flops = model_flops(n_params, layers, d, spec["seq"], tokens)
        results.append({"config": config_name, "method": method, "jax_ms": round(1000 * jt, 1),
                        "torch_ms": round(1000 * tt, 1), "ratio": round(jt / tt, 3),
                        "mfu": round(flops / jt / 1e9 / peak, 3)})
        print(results[-1], flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,medium")
    parser.add_argument("--methods", default="plain,npo,rmu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    peaks = matmul_peak_gflops()
    print({"peak_gflops": peaks}, flush=True)
    results = []
    for name in args.configs.split(","):
        results += bench(name, args.methods.split(","), args.repeats, peaks["jax"])
    # A neighbour's load during the first peak measurement would inflate every MFU: measure again after
    # the runs and rescale to the best peak seen.
    final = matmul_peak_gflops()
    peak = max(peaks["jax"], final["jax"])
    for r in results:
        r["mfu"] = round(r["mfu"] * peaks["jax"] / peak, 3)
    print(json.dumps({"results": results, "peak_gflops": round(peak, 1),
                      "torch_peak_gflops": round(max(peaks["torch"], final["torch"]), 1)}))


if __name__ == "__main__":
    main()
