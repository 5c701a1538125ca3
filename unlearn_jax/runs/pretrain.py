"""`unlearn-jax pretrain`: train the Flax model from scratch on a world, through the same jitted,
sharded step and loop the unlearning engine uses (the objective is plain token-mean NLL).

Training data: the world's training files (retain + forget facts under the training templates, and the
skills' *_train files) minus the ``--exclude`` splits; each record appears ``exposure`` times per epoch.
``--exclude forget`` trains the **gold** model.
Held-out paraphrase templates are never trained on. Results are cached by
(world hash, preset, steps, seed, exclude), so demos and tests train once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import jax
import numpy as np
import transformers

from unlearn_jax.data import world as world_lib
from unlearn_jax.data.records import load_records
from unlearn_jax.data.sampler import EpochSampler
from unlearn_jax.data.tokenize import encode_records, pack, padded_length
from unlearn_jax.engine.loop import LoopConfig, run_loop
from unlearn_jax.engine.optim import OptimizerConfig, make_optimizer
from unlearn_jax.engine.state import init_state
from unlearn_jax.engine.step import make_step
from unlearn_jax.errors import UserError
from unlearn_jax.evaluation.knowledge import record_stats, summarize
from unlearn_jax.models import llama, sharding
from unlearn_jax.models.hf import LM
from unlearn_jax.objectives.nll import nll_loss
from unlearn_jax.runs.rundir import copy_run, finish_run, prepare_run_dir, versions

VOCAB_MULTIPLE = 64


@dataclasses.dataclass(frozen=True)
class Preset:
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    batch_size: int
    lr: float
    steps: int
    warmup_steps: int


PRESETS = {
    "micro": Preset(num_layers=2, hidden_size=64, num_heads=4, intermediate_size=172, batch_size=128, lr=5e-3,
                    steps=200, warmup_steps=10),
    "tiny": Preset(num_layers=4, hidden_size=128, num_heads=4, intermediate_size=344, batch_size=128, lr=3e-3,
                   steps=500, warmup_steps=20),
    "small": Preset(num_layers=6, hidden_size=256, num_heads=8, intermediate_size=688, batch_size=128, lr=2e-3,
                    steps=500, warmup_steps=30),
}


def model_config(preset: Preset, tokenizer, max_positions: int = 512) -> llama.ModelConfig:
    vocab = -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    return llama.ModelConfig(
        vocab_size=vocab,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_layers=preset.num_layers,
        num_heads=preset.num_heads,
        num_kv_heads=preset.num_heads,
        head_dim=preset.hidden_size // preset.num_heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def packed_shape(data, records_per_batch: int, row_multiple: int) -> tuple[int, int]:
    """(row length, rows) of a packed batch holding about ``records_per_batch`` records: rows twice the
    longest record, as many rows as the mean record length needs, rounded up to ``row_multiple``."""
    lengths = data.attention_mask.sum(axis=1)
    row_length = padded_length(2 * int(lengths.max()))
    rows = math.ceil(records_per_batch * float(lengths.mean()) / row_length)
    return row_length, math.ceil(rows / row_multiple) * row_multiple


def cache_root() -> Path:
    return Path(os.environ.get("UNLEARN_JAX_CACHE", Path.home() / ".cache" / "unlearn_jax")) / "pretrain"


def cache_key(world_hash: str, preset: str, steps: int, seed: int, exclude: tuple[str, ...]) -> str:
    text = json.dumps([world_hash, preset, steps, seed, sorted(exclude), "pretrain-v1"])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def split_accuracies(params, config, tokenizer, manifest) -> dict[str, dict[str, float]]:
    """Greedy-answer accuracy and mean answer NLL on every fact split (and paraphrased prompts)."""
    results = {}
    for split in ("forget", "retain", "holdout", "neighbours"):
        records = load_records(world_lib.world_path(manifest, f"{split}.jsonl"))
        results[split] = summarize(record_stats(params, config, encode_records(records, tokenizer)))
        if split in ("forget", "retain"):
            para = [{**r, "prompt": r["paraphrased_prompt"]} for r in records if r.get("paraphrased_prompt")]
            results[f"{split}_paraphrase"] = summarize(record_stats(params, config, encode_records(para, tokenizer)))
    return results


def pretrain(
    world_dir: str,
    out: str,
    *,
    preset: str = "tiny",
    exclude: tuple[str, ...] = (),
    steps: int | None = None,
    seed: int = 0,
    mesh_spec: str | None = None,
    resume: bool = False,
    force: bool = False,
    use_cache: bool = True,
    quiet: bool = False,
) -> dict:
    """Train and write a run directory (model/, run.json, metrics.jsonl, checkpoints/); return run.json."""
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    steps = p.steps if steps is None else steps
    loop = LoopConfig(steps=steps, log_every=10, checkpoint_every=50)
    mesh = sharding.make_mesh(mesh_spec)  # a bad --mesh is refused even when the result is cached
    manifest = world_lib.load_world(world_dir)
    records = world_lib.training_records(manifest, exclude)
    out_path, work = prepare_run_dir(out, resume=resume, force=force)
    key = cache_key(manifest["world_hash"], preset, steps, seed, tuple(exclude))
    cached = cache_root() / key
    if use_cache and not resume and (cached / "run.json").exists():
        copy_run(cached, out_path)
        if not quiet:
            print(f"pretrain: cached result {key} -> {out_path}")
        return json.loads((out_path / "run.json").read_text())

    tokenizer = transformers.AutoTokenizer.from_pretrained(world_lib.world_path(manifest, "tokenizer"))
    config = model_config(p, tokenizer)
    data = encode_records(records, tokenizer, max_length=config.max_position_embeddings, source=f"--data {world_dir}")
    params = sharding.shard_params(llama.init_params(config, jax.random.PRNGKey(seed)), mesh)
    opt = OptimizerConfig(name="adamw", lr=p.lr, warmup_steps=p.warmup_steps, schedule="cosine", total_steps=steps,
                          max_grad_norm=1.0)
    optimizer = make_optimizer(opt)
    state = init_state(params, optimizer, seed)
    copies = np.repeat(np.arange(len(records)), [int(r.get("exposure", 1)) for r in records])
    sampler = EpochSampler(len(copies), p.batch_size, seed)
    row_length, rows = packed_shape(data, p.batch_size, sharding.data_parallel_size(mesh))

    def next_batch(position, state):
        candidates, _ = sampler.take(position, 2 * p.batch_size)
        batch, used = pack(data, copies[candidates], rows, row_length)
        _, position = sampler.take(position, used)
        return {"train": sharding.shard_batch(batch, mesh)}, position

    def objective(params, constants, batch, rng):
        return nll_loss(params, config, batch["train"])

    result = run_loop(make_step(objective, optimizer), state, {}, None, next_batch, sampler.start(), loop, work,
                      resume=resume, quiet=quiet, description=f"pretrain {preset}")
    final_params = result.state.params
    accuracies = split_accuracies(final_params, config, tokenizer, manifest)
    tokens = rows * row_length * result.steps_run
    run = {
        "command": "pretrain",
        "config": {"world": str(Path(world_dir).absolute()), "world_hash": manifest["world_hash"], "preset": preset,
                   "preset_values": dataclasses.asdict(p), "steps": steps, "seed": seed, "exclude": list(exclude),
                   "mesh": mesh_spec, "optimizer": dataclasses.asdict(opt)},
        "model": {"num_params": config.num_params(), **dataclasses.asdict(config)},
        "data": {"train_records": len(data), "records_per_epoch": len(copies), "packed_rows": rows,
                 "row_length": row_length},
        "metrics": {"accuracy": accuracies,
                    "final_loss": next(h["loss"] for h in reversed(result.history) if "loss" in h),
                    "loss_curve": [[h["step"], h["loss"]] for h in result.history if "loss" in h]},
        "timings": {"wall_s": round(result.seconds, 2), "tokens_per_s": round(tokens / max(result.seconds, 1e-9)),
                    "steps_run_in_last_process": result.steps_run},
        "versions": versions(),
    }
    finish_run(work, out_path, LM(config=config, params=final_params, tokenizer=tokenizer), run)
    if use_cache:
        copy_run(out_path, cached)
    if not quiet:
        acc = accuracies
        print(f"pretrain: {out_path}  forget acc {acc['forget']['acc']:.3f}  retain acc {acc['retain']['acc']:.3f}  "
              f"holdout acc {acc['holdout']['acc']:.3f}  ({result.seconds:.1f} s)")
    return run
