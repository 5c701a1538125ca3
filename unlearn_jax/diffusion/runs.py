"""`unlearn-jax diffusion {train,unlearn,attack,sequential}`: run directories for the DDPM part.

A diffusion model directory holds ``diffusion.json`` (format, U-Net config, noise schedule, written
last), ``params.safetensors`` (U-Net + prompt encoder, keys are parameter paths) and
``evaluator.safetensors`` (the CNN that judges samples). Run directories follow the language-model
runs: ``model/``, ``run.json`` (written last), ``metrics.jsonl``, ``checkpoints/`` for ``--resume``, and
``samples.png``; a run works in ``.NAME.partial/`` and is renamed into place when complete.
Training is cached (``$UNLEARN_JAX_CACHE/diffusion``) by preset, steps and seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.diffusion import attack as attack_lib
from unlearn_jax.diffusion import evaluator as evaluator_lib
from unlearn_jax.diffusion import images, metrics, objectives, unet
from unlearn_jax.diffusion.ddpm import Schedule
from unlearn_jax.diffusion.images import Concept
from unlearn_jax.diffusion.objectives import EraseConfig
from unlearn_jax.diffusion.unet import UNetConfig
from unlearn_jax.engine.loop import LoopConfig, run_loop
from unlearn_jax.engine.optim import OptimizerConfig, make_optimizer
from unlearn_jax.engine.state import init_state, merge_params, split_params
from unlearn_jax.engine.step import make_step
from unlearn_jax.errors import UserError
from unlearn_jax.fileio import atomic_directory, replace_directory, write_json_atomic
from unlearn_jax.runs.pretrain import cache_root
from unlearn_jax.runs.rundir import copy_run, prepare_run_dir, versions

FORMAT = "unlearn-jax-ddpm"
REBOUND_MARGIN = 0.1


@dataclass(frozen=True)
class TrainPreset:
    channels: tuple[int, ...]
    groups: int
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int


PRESETS = {
    "tiny": TrainPreset(channels=(16, 32), groups=4, steps=3000, batch_size=64, lr=2e-3, warmup_steps=100),
    "test": TrainPreset(channels=(16, 32), groups=4, steps=1200, batch_size=64, lr=3e-3, warmup_steps=50),
}


@dataclass(frozen=True)
class DiffusionModel:
    params: dict
    config: UNetConfig
    schedule: Schedule
    evaluator: dict


def _flatten(tree: dict) -> dict[str, np.ndarray]:
    return {"/".join(k.key for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = jnp.asarray(value)
    return tree


def save_model(directory: Path, model: DiffusionModel) -> None:
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(_flatten(model.params), str(directory / "params.safetensors"))
    save_file(_flatten(model.evaluator), str(directory / "evaluator.safetensors"))
    write_json_atomic(directory / "diffusion.json", {"format": FORMAT, "unet": dataclasses.asdict(model.config),
                                                     "schedule": dataclasses.asdict(model.schedule)})


def load_model(path: str | Path) -> DiffusionModel:
    """A diffusion model directory or a run directory holding ``model/``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    root = Path(path)
    directory = root / "model" if (root / "model" / "diffusion.json").exists() else root
    manifest = directory / "diffusion.json"
    if not manifest.is_file():
        raise UserError(f"{path}: not a diffusion model (no diffusion.json); train one with "
                        "`unlearn-jax diffusion train`")
    try:
        meta = json.loads(manifest.read_text())
        if meta.get("format") != FORMAT:
            raise UserError(f"{manifest}: not an unlearn-jax diffusion model (format {meta.get('format')!r})")
        config = UNetConfig(**{**meta["unet"], "channels": tuple(meta["unet"]["channels"])})
        schedule = Schedule(**meta["schedule"])
        params = _unflatten(load_file(str(directory / "params.safetensors")))
        evaluator = _unflatten(load_file(str(directory / "evaluator.safetensors")))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{manifest}: corrupt diffusion config ({e})") from None
    except (FileNotFoundError, SafetensorError, OSError) as e:
        raise UserError(f"{directory}: cannot read the weights ({e})") from None
    return DiffusionModel(params, config, schedule, evaluator)


def save_grid(path: Path, rows: dict[str, jax.Array], columns: int = 12) -> None:
    """A PNG with one labelled row of up to ``columns`` samples per entry of ``rows``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), columns, figsize=(columns * 0.7 + 1.6, len(rows) * 0.75 + 0.2),
                             squeeze=False)
    for r, (label, batch) in enumerate(rows.items()):
        batch = np.asarray(batch)
        for col in range(columns):
            ax = axes[r, col]
            ax.axis("off")
            if col < len(batch):
                ax.imshow(np.clip((batch[col] + 1) / 2, 0, 1), interpolation="nearest")
        axes[r, 0].text(-2, 8, label, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=1.5 / (columns * 0.7 + 1.6), wspace=0.05, hspace=0.1)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prompt_rows(samples: jax.Array, colour: np.ndarray, background: np.ndarray, words: list[str],
                per_row: int = 12) -> dict[str, jax.Array]:
    """Grid rows: for each colour word, samples of its prompts (all backgrounds, interleaved)."""
    rows = {}
    for word in words:
        c = images.concept(word)
        picked = np.flatnonzero((colour if c.axis == "colour" else background) == c.index)
        order = picked[np.argsort(np.arange(len(picked)) % max(1, len(picked) // len(images.BACKGROUNDS)),
                                  kind="stable")]
        rows[word] = samples[order[:per_row]]
    return rows


def _cache_dir(preset: str, steps: int, seed: int) -> Path:
    text = json.dumps([dataclasses.asdict(PRESETS[preset]), steps, seed, "ddpm-v2"])
    return cache_root().parent / "diffusion" / hashlib.sha256(text.encode()).hexdigest()[:20]


def _finish(work: Path, out: Path, model: DiffusionModel, run: dict) -> None:
    save_model(work / "model", model)
    write_json_atomic(work / "run.json", run)
    replace_directory(work, out)


def train(out: str, *, preset: str = "tiny", steps: int | None = None, seed: int = 0, samples_per_prompt: int = 8,
          resume: bool = False, force: bool = False, use_cache: bool = True, quiet: bool = False) -> dict:
    """Train the base DDPM (all prompts, CFG dropout) and its evaluator; write a run directory."""
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    steps = p.steps if steps is None else steps
    loop = LoopConfig(steps=steps, log_every=50, checkpoint_every=500)
    out_path, work = prepare_run_dir(out, resume=resume, force=force)
    cached = _cache_dir(preset, steps, seed)
    if use_cache and not resume and (cached / "run.json").exists():
        copy_run(cached, out_path)
        if not quiet:
            print(f"diffusion train: cached result {cached.name} -> {out_path}")
        return json.loads((out_path / "run.json").read_text())
    config, schedule = UNetConfig(channels=p.channels, groups=p.groups), Schedule()
    optimizer = make_optimizer(OptimizerConfig(lr=p.lr, warmup_steps=p.warmup_steps, schedule="cosine",
                                               total_steps=steps, max_grad_norm=1.0))
    state = init_state(unet.init_params(config, jax.random.PRNGKey(seed)), optimizer, seed)

    def objective(params, constants, batch, rng):
        return objectives.training_loss(params, config, schedule, rng, p.batch_size)

    result = run_loop(make_step(objective, optimizer), state, {}, None, lambda position, state: ({}, position), {},
                      loop, work, resume=resume, quiet=quiet, description=f"diffusion train {preset}")
    judge = evaluator_lib.train(seed)
    model = DiffusionModel(jax.device_get(result.state.params), config, schedule, judge)
    quality = base_quality(model, seed, samples_per_prompt, work / "samples.png")
    run = {"command": "diffusion train",
           "config": {"preset": preset, "preset_values": dataclasses.asdict(p), "steps": steps, "seed": seed},
           "model": {"num_params": unet.num_params(model.params), "unet": dataclasses.asdict(config),
                     "schedule": dataclasses.asdict(schedule)},
           "metrics": {**quality, "final_loss": next(h["loss"] for h in reversed(result.history) if "loss" in h),
                       "loss_curve": [[h["step"], h["loss"]] for h in result.history if "loss" in h]},
           "timings": {"wall_s": round(result.seconds, 2), "steps_run_in_last_process": result.steps_run},
           "versions": versions()}
    _finish(work, out_path, model, run)
    if use_cache:
        copy_run(out_path, cached)
    if not quiet:
        print(f"diffusion train: {out_path}  colour acc {quality['accuracy']['colour']:.3f}  background acc "
              f"{quality['accuracy']['background']:.3f}  FD {quality['fd']:.3f}  ({result.seconds:.1f} s)")
    return run


def base_quality(model: DiffusionModel, seed: int, per_prompt: int, grid: Path) -> dict:
    """Evaluator accuracy per axis on samples of every prompt, per-concept rates, FD; writes a grid."""
    key = jax.random.PRNGKey(seed + 1)
    samples, colour, background = metrics.sample_prompts(model.params, model.config, model.schedule, key, per_prompt)
    result = metrics.erasure_metrics(model.evaluator, samples, colour, background, [], jax.random.fold_in(key, 1))
    _, predicted = evaluator_lib.predict(model.evaluator, samples)
    labels = {"colour": colour, "background": background}
    rates = {word: float(np.mean(predicted[axis][labels[axis] == i] == i))
             for axis, words in images.AXES.items() for i, word in enumerate(words)}
    save_grid(grid, prompt_rows(samples, colour, background, list(images.COLOURS)))
    return {"accuracy": result["accuracy"], "fd": result["fd"], "concept_rate": rates}


def erase_metrics(model: DiffusionModel, params: dict, erased: list[Concept], seed: int, per_prompt: int
                  ) -> tuple[dict, tuple]:
    """UA/IRA/CRA/FD of ``params`` (the same sampling noise for every call with the same seed)."""
    key = jax.random.PRNGKey(seed + 1)
    samples, colour, background = metrics.sample_prompts(params, model.config, model.schedule, key, per_prompt)
    return (metrics.erasure_metrics(model.evaluator, samples, colour, background, erased, jax.random.fold_in(key, 1)),
            (samples, colour, background))


def unlearn(model: str, concept_word: str, out: str, erase: EraseConfig | None = None, *, seed: int = 0,
            samples_per_prompt: int = 8, erased_before: tuple[str, ...] = (), resume: bool = False,
            force: bool = False, quiet: bool = False) -> dict:
    """Erase ``concept_word`` from ``model``; ``erased_before`` (sequential) are also measured."""
    erase = erase or EraseConfig()
    c = images.concept(concept_word)
    measured = [images.concept(w) for w in (*erased_before, concept_word)]
    objectives.anchor_token(c, erase.anchor)
    base = load_model(model)
    out_path, work = prepare_run_dir(out, resume=resume, force=force)
    trainable, frozen = split_params(base.params, objectives.PARAM_GROUPS[erase.params])
    optimizer = make_optimizer(OptimizerConfig(lr=erase.lr, total_steps=erase.steps, max_grad_norm=1.0))
    state = init_state(trainable, optimizer, seed)
    constants = {"original": base.params} if erase.objective == "esd" else {}
    loop = LoopConfig(steps=erase.steps, log_every=10, checkpoint_every=50)
    objective = objectives.make_objective(erase, base.config, base.schedule, c, tuple(measured[:-1]))
    result = run_loop(make_step(objective, optimizer), state,
                      frozen, constants, lambda position, state: ({}, position), {}, loop, work, resume=resume,
                      quiet=quiet, description=f"diffusion unlearn {concept_word}")
    params = jax.device_get(merge_params(result.state.params, frozen))
    before, _ = erase_metrics(base, base.params, measured, seed, samples_per_prompt)
    after, (samples, colour, background) = erase_metrics(base, params, measured, seed, samples_per_prompt)
    save_grid(work / "samples.png", prompt_rows(samples, colour, background, list(images.COLOURS)))
    run = {"command": "diffusion unlearn",
           "config": {"model": str(Path(model).absolute()), "concept": concept_word, "seed": seed,
                      "samples_per_prompt": samples_per_prompt, "erased_before": list(erased_before),
                      **dataclasses.asdict(erase)},
           "metrics": {"before": before, "after": after,
                       "loss_curve": [[h["step"], h["loss"]] for h in result.history if "loss" in h]},
           "timings": {"wall_s": round(result.seconds, 2), "steps_run_in_last_process": result.steps_run},
           "versions": versions()}
    _finish(work, out_path, DiffusionModel(params, base.config, base.schedule, base.evaluator), run)
    if not quiet:
        print(f"diffusion unlearn {concept_word}: {out_path}  UA {before['ua'][concept_word]:.3f} -> "
              f"{after['ua'][concept_word]:.3f}  IRA {before['ira']:.3f} -> {after['ira']:.3f}  CRA "
              f"{before['cra']:.3f} -> {after['cra']:.3f}  FD {before['fd']:.3f} -> {after['fd']:.3f}")
    return run


def attack(model: str, original: str, concept_word: str, out: str, config: attack_lib.AttackConfig | None = None,
           *, seed: int = 0, samples_per_prompt: int = 16, force: bool = False, quiet: bool = False) -> dict:
    """Soft-prompt attack on ``model`` for ``concept_word``; the original model is the ceiling."""
    config = config or attack_lib.AttackConfig()
    c = images.concept(concept_word)
    target, reference = load_model(model), load_model(original)
    out_path = Path(out)
    if out_path.exists() and not force:
        raise UserError(f"--out {out}: already exists (pass --force to replace it)")
    key = jax.random.PRNGKey(seed + 2)

    def concept_samples(m: DiffusionModel, context) -> jax.Array:
        return metrics.generate(m.params, m.config, m.schedule, key, context)

    tokens_context = {name: attack_lib.attacked_context(m.params, m.config, c,
                                                        unet.token_embedding(m.params, images.TOKEN[c.word]),
                                                        samples_per_prompt)
                      for name, m in (("original", reference), ("unlearned", target))}
    vector, losses = attack_lib.soft_prompt(target.params, target.config, target.schedule, c, config, seed)
    adversarial = attack_lib.attacked_context(target.params, target.config, c, vector, samples_per_prompt)
    rows = {"original, prompt": concept_samples(reference, tokens_context["original"]),
            "unlearned, prompt": concept_samples(target, tokens_context["unlearned"]),
            "unlearned, attack": concept_samples(target, adversarial)}
    rates = {name: metrics.concept_rate(reference.evaluator, samples, c) for name, samples in rows.items()}
    result = {"command": "diffusion attack", "model": str(model), "original": str(original), "concept": concept_word,
              "seed": seed, "samples_per_prompt": samples_per_prompt, "attack": dataclasses.asdict(config),
              "concept_rate": {"original": rates["original, prompt"], "unlearned": rates["unlearned, prompt"],
                               "attacked": rates["unlearned, attack"]},
              "loss_curve": losses, "versions": versions()}
    with atomic_directory(out_path) as tmp:
        save_grid(tmp / "samples.png", {f"{k} ({rates[k]:.2f})": v for k, v in rows.items()})
        write_json_atomic(tmp / "attack.json", result)
    if not quiet:
        r = result["concept_rate"]
        print(f"diffusion attack {concept_word}: {out_path}  concept rate: original {r['original']:.3f}, "
              f"unlearned {r['unlearned']:.3f}, attacked {r['attacked']:.3f}")
    return result


def sequential(model: str, concepts: list[str], out: str, erase: EraseConfig | None = None, *, seed: int = 0,
               samples_per_prompt: int = 8, resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    """Erase ``concepts`` one after another (each run starts from the previous model); after each, UA of
    every concept erased so far. Rebound: a concept's UA falls by more than ``REBOUND_MARGIN`` below its
    value right after its own request."""
    erase = erase or EraseConfig()
    if len(concepts) < 2 or len(set(concepts)) != len(concepts):
        raise UserError("--concepts: give at least two distinct concepts, comma-separated")
    for word in concepts:
        objectives.anchor_token(images.concept(word), erase.anchor)
    out_path = Path(out).absolute()
    if out_path.exists() and not out_path.is_dir():
        raise UserError(f"--out {out}: is a file, not a directory")
    if (out_path / "sequential.json").exists() and not (force or resume):
        raise UserError(f"--out {out}: already exists (pass --force to redo it or --resume to continue)")
    out_path.mkdir(parents=True, exist_ok=True)
    current, matrix = model, []
    for k, word in enumerate(concepts, start=1):
        run_dir = out_path / f"request_{k}"
        if resume and (run_dir / "run.json").exists():
            run = json.loads((run_dir / "run.json").read_text())
        else:
            run = unlearn(current, word, str(run_dir), erase, seed=seed, samples_per_prompt=samples_per_prompt,
                          erased_before=tuple(concepts[: k - 1]), resume=resume, force=True, quiet=quiet)
        matrix.append([run["metrics"]["after"]["ua"].get(w) for w in concepts])
        current = str(run_dir)
    rebound = [{"concept": concepts[j], "after_request": k + 1, "ua_own": matrix[j][j], "ua": matrix[k][j]}
               for j in range(len(concepts)) for k in range(j + 1, len(concepts))
               if matrix[j][j] - matrix[k][j] > REBOUND_MARGIN]
    result = {"command": "diffusion sequential", "model": str(model), "concepts": concepts, "seed": seed,
              "erase": dataclasses.asdict(erase), "ua_matrix": matrix, "rebound": rebound,
              "rebound_margin": REBOUND_MARGIN, "versions": versions()}
    from unlearn_jax.report.plots import heatmap

    grid = np.array([[np.nan if v is None else v for v in row] for row in matrix])
    heatmap(out_path / "ua_matrix.png", grid, row_labels=[f"after {w}" for w in concepts], col_labels=concepts,
            title="UA of each concept after each request", vmin=0.0, vmax=1.0)
    write_json_atomic(out_path / "sequential.json", result)
    if not quiet:
        print(f"diffusion sequential: {out_path}  rebound {len(rebound)} of "
              f"{len(concepts) * (len(concepts) - 1) // 2} (concept, later request) pairs")
    return result
