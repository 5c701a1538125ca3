"""`unlearn-jax` entry point: parses, validates, dispatches. No logic of its own.

Exit codes: 0 ok, 2 bad input or usage (one line on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import os
import sys

from unlearn_jax.audit import PROBES as AUDIT_PROBES
from unlearn_jax.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line naming the problem (argparse prints the whole usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common() -> argparse.ArgumentParser:
    common = OneLineParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return common


def _unlearn_options(u) -> None:
    """Options shared by `unlearn` and `sequential` (all but the model and the forget data)."""
    u("--retain", help="retain data (same formats); required unless the method has no retain term or --alpha 0")
    u("--method", help="ga | graddiff | npo | simnpo | rmu | idk | dpo")
    u("--out", help="run directory to write")
    u("--config", help="YAML file of these options (dashes or underscores); flags given here override it")
    u("--field-map", help="map other schemas' fields, e.g. prompt=question,answer=answer, or a preset: tofu, muse")
    u("--steps", type=int, help="update steps (default: the method's, 20-160)")
    u("--lr", type=float, help="peak learning rate (default: the method's, 5e-4 to 1e-2)")
    u("--optimizer", choices=("adamw", "sgd"), help="optimizer (default adamw)")
    u("--warmup-steps", type=int, help="linear warmup steps, then constant (default 0)")
    u("--batch-size", type=int, help="records per forget batch and per retain batch (default 32)")
    u("--max-grad-norm", type=float, help="global-norm gradient clipping; 0 = off (default 1.0)")
    u("--beta", type=float, help="inverse temperature of npo/dpo (default 0.1) and simnpo (default 4.5)")
    u("--alpha", type=float, help="retain weight (default: the method's, 5; rmu 10; ga has no retain term)")
    u("--gamma", type=float, help="forget weight (default 1)")
    u("--margin", type=float, help="simnpo's margin gamma_s (default 0)")
    u("--retain-loss", choices=("nll", "kl"), help="retain term: nll, or kl = KL(ref||model) (default nll)")
    u("--rmu-layer", type=int, help="rmu: the steered decoder layer (default: the middle layer)")
    u("--rmu-coeff", type=float,
      help="rmu: norm c of the control vector (default: 2x the mean norm of that layer's output on forget)")
    u("--trainable", help="regex over parameter paths like layers_3/mlp/down_proj/kernel; only matches train "
                          "(default: all; rmu: the MLP down-projections of the 3 layers up to --rmu-layer)")
    u("--select", choices=("minkpp", "mink", "mink_k04", "minkpp_k04", "loss", "zlib", "exact_match", "correct"),
      help="selective unlearning: score the forget set with the model first (k = 0.2) and drop the --drop "
           "fraction least memorized by this score; forgetting is still measured on the whole set")
    u("--drop", type=float, help="fraction of the forget set to drop with --select, in [0, 1) (default 0)")
    u("--curriculum", choices=("none", "confidence", "reverse"),
      help="forget-set order: none (uniform shuffle), confidence (most memorized first, by --select or minkpp; "
           "each of --stages stages adds the next slice), reverse (least memorized first, the control)")
    u("--stages", type=int, help="curriculum stages, each with an equal share of --steps (default 1)")
    u("--rescore", action="store_const", const=True,
      help="curriculum: re-score the forget set with the model being unlearned at every stage boundary")
    u("--mesh", help="device mesh, e.g. data=2,fsdp=4 (default: all devices on data)")
    u("--seed", type=int, help="random seed: data order and rmu's control vector (default 0)")
    u("--no-shuffle", dest="shuffle", action="store_const", const=False, help="keep the data order")
    u("--stop-when", help="stop early, e.g. forget_acc<=0.1 (forget_acc|forget_nll|retain_acc|retain_nll), "
                          "checked every --eval-every steps (default 10 when set)")
    u("--eval-every", type=int, help="evaluate forget/retain every N steps (default 0 = only at the end)")
    u("--checkpoint-every", type=int, help="orbax checkpoint every N steps (default: only at the end)")
    u("--log-every", type=int, help="write a metrics.jsonl line every N steps (default 10)")
    u("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    u("--force", action="store_true", help="replace --out when the new run succeeds")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="unlearn-jax",
        description="Machine unlearning for foundation models in JAX, with audits that expose fake unlearning.",
    )
    from unlearn_jax import __version__

    parser.add_argument("--version", action="version", version=f"unlearn-jax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common()

    world = sub.add_parser("world", parents=[common], help="generate the embedded synthetic world",
                           description="Generate the synthetic world of fictitious people (facts, paraphrases, "
                                       "perturbed answers, forget/retain/holdout splits, sequential requests, "
                                       "skill data) and its word-level tokenizer. Same seed -> identical files.")
    world.add_argument("--out", required=True, help="output directory (must be empty or absent unless --force)")
    world.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    world.add_argument("--people", type=int, default=100, help="number of trained people, 10..2000 (default 100)")
    world.add_argument("--forget-frac", type=float, default=0.1,
                       help="share of people in the forget split, in (0, 0.5] (default 0.1)")
    world.add_argument("--requests", type=int, default=3,
                       help="number of disjoint forget requests the forget split is cut into, 1..#forget people "
                            "(default 3; needs at least 3 forget people)")
    world.add_argument("--exposure", default="1",
                       help="copies per pretraining epoch, dealt in equal shares over the facts, e.g. 8,4,2,1 "
                            "(some facts seen 8x as often as others); default 1 (all equal)")
    world.add_argument("--force", action="store_true", help="replace --out if it exists")
    world.set_defaults(run=_world)

    pretrain = sub.add_parser("pretrain", parents=[common], help="train the base (or gold) model on a world",
                              description="Train the Flax model from scratch on a world's training files and write "
                                          "a run directory whose model/ is a Hugging Face model directory. "
                                          "Results are cached by (world, preset, steps, seed, exclude).")
    pretrain.add_argument("--data", required=True, help="world directory (from `unlearn-jax world`)")
    pretrain.add_argument("--out", required=True, help="run directory to write")
    pretrain.add_argument("--preset", default="tiny", help="model/training preset: tiny (~1 M params), small, or "
                          "micro (2 layers, d 64; the quick demo)")
    pretrain.add_argument("--exclude", action="append", default=[], metavar="SPLIT",
                          help="leave a split out of training, e.g. forget (the gold model) or requests/2; "
                               "repeatable")
    pretrain.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    pretrain.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    pretrain.add_argument("--mesh", default=None, help="device mesh, e.g. data=2,fsdp=4 (default: all on data)")
    pretrain.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    pretrain.add_argument("--force", action="store_true", help="replace --out when the new run succeeds")
    pretrain.add_argument("--no-cache", action="store_true", help="train even if a cached result exists")
    pretrain.set_defaults(run=_pretrain)

    unlearn = sub.add_parser("unlearn", parents=[common], help="unlearn a forget set from a model",
                             description="Unlearn the forget set with one method through the jitted, sharded, "
                                         "resumable engine; write a run directory whose model/ is a Hugging "
                                         "Face model directory. L = gamma*L_forget + alpha*L_retain.")
    u = unlearn.add_argument
    u("--model", help="model directory, run directory, or hub id (online)")
    u("--forget", help="forget data: .jsonl/.json/.csv/.parquet file or hf:NAME[:CONFIG][:SPLIT]")
    _unlearn_options(u)
    unlearn.set_defaults(run=_unlearn)

    sequential = sub.add_parser("sequential", parents=[common], help="unlearn forget requests one after another",
                                description="Apply forget requests in order, each from the previous result, and "
                                            "measure forget accuracy on every request after each one (rebound). "
                                            "Takes every `unlearn` option; writes request_K/ runs, "
                                            "sequential.json, heatmap.png and report.md.")
    q = sequential.add_argument
    q("--model", help="the model to start from (model directory, run directory, or hub id)")
    q("--requests", nargs="+", metavar="DATA", help="forget data files, in the order the requests arrive")
    q("--retrained", nargs="+", metavar="MODEL",
      help="optional gold models, one per prefix of requests (gold K never saw requests 1..K)")
    _unlearn_options(q)
    sequential.set_defaults(run=_sequential)

    score = sub.add_parser("score", parents=[common], help="per-record memorization scores as JSONL",
                           description="Score every record with one forward pass per batch: mean target NLL "
                                       "(loss), zlib ratio, Min-K%% and Min-K%%++ at --k and at 0.4, exact match, "
                                       "greedy correctness. Higher mink/minkpp = more memorized.")
    score.add_argument("--model", required=True, help="model directory, run directory, or hub id (online)")
    score.add_argument("--data", required=True, help="records: .jsonl/.json/.csv/.parquet or hf:NAME")
    score.add_argument("--out", required=True, help="output .jsonl file (one line per record)")
    score.add_argument("--k", type=float, default=0.2, help="Min-K%% fraction in (0, 1] (default 0.2)")
    score.add_argument("--field-map", help="map other schemas' fields, e.g. prompt=question,answer=answer")
    score.add_argument("--force", action="store_true", help="replace --out if it exists")
    score.set_defaults(run=_score)

    audit = sub.add_parser("audit", parents=[common],
                           help="attack an unlearned model: removed, hidden or not forgotten?",
                           description="Attack the unlearned model, the original and (best) the gold model retrained "
                                       "without the forget data the same ways, and judge per probe whether the "
                                       "forget knowledge was removed, hidden or never forgotten. Writes audit.json, "
                                       "report.md and plots.")
    a = audit.add_argument
    a("--model", required=True, help="the unlearned model (model directory, run directory or hub id)")
    a("--original", required=True, help="the model before unlearning")
    a("--retrained", help="the gold model, trained without the forget data (without it the verdicts are weaker)")
    a("--forget", required=True, help="forget QA records (.jsonl/.json/.csv/.parquet or hf:NAME)")
    a("--retain", required=True, help="retain QA records")
    a("--out", required=True, help="audit directory to write")
    a("--probes", default=",".join(AUDIT_PROBES), help=f"comma-separated subset of {','.join(AUDIT_PROBES)}")
    a("--quant-schemes", default="int8,int4,int4-g128,int4-g64,int4-g32",
      help="weight quantization schemes: int8|int4, optionally -gG for groups of G inputs (default: per channel)")
    a("--sparsities", default="0.1,0.3,0.5", help="pruning sparsities in (0, 1), magnitude and Wanda")
    a("--relearn-fraction", type=float, default=0.2, help="share of forget facts fine-tuned on (default 0.2)")
    a("--relearn-steps", default="0,5,10,20,40", help="relearning curve checkpoints (steps)")
    a("--relearn-lr", type=float, default=3e-4, help="AdamW rate of relearning and capacity fine-tuning")
    a("--capacity-data", help="new QA facts for the capacity probe (default: a world's holdout.jsonl)")
    a("--capacity-steps", default="0,10,20,40,60", help="capacity curve checkpoints (steps)")
    a("--capacity-target", type=float, default=0.8, help="accuracy that counts as learned (default 0.8)")
    a("--max-retain", type=int, default=400, help="retain records evaluated (a seeded sample; default 400)")
    a("--attack-facts", type=int, default=8,
      help="gcg/embed: forget facts attacked one by one; a universal suffix is fitted on half and tested on the rest")
    a("--suffix-length", type=int, default=20, help="gcg/embed: adversarial suffix length in tokens (default 20)")
    a("--gcg-steps", type=int, default=40, help="gcg: optimisation steps per attack (default 40)")
    a("--gcg-candidates", type=int, default=128, help="gcg: single-token swaps scored per step in one batch")
    a("--gcg-top-k", type=int, default=256, help="gcg: candidate tokens per suffix position (default 256)")
    a("--gcg-loss", choices=("target", "representation"), default="target",
      help="gcg: target = the answer's NLL; representation = distance to the original model's hidden state "
           "on the plain prompt (Lucki et al. 2024)")
    a("--embed-steps", type=int, default=100, help="embed: Adam steps on the soft suffix (default 100)")
    a("--seed", type=int, default=0, help="seed of splits, samples, fine-tuning and the bootstrap (default 0)")
    a("--field-map", help="map other schemas' fields, e.g. prompt=question,answer=answer, or a preset")
    a("--force", action="store_true", help="replace --out when the audit succeeds")
    audit.set_defaults(run=_audit)

    evaluation = sub.add_parser("eval", parents=[common], help="knowledge, membership inference and side effects",
                                description="Evaluate a model: per-split knowledge (accuracy, answer probability, "
                                            "ROUGE-L, truth ratio, paraphrase accuracy, model utility, forget "
                                            "quality vs the gold model), MIA (AUC, PrivLeak) and abilities "
                                            "(in-context learning, two-hop reasoning, format instructions, "
                                            "hallucination). Writes one JSON.")
    e = evaluation.add_argument
    e("--model", required=True, help="model directory, run directory, or hub id (online)")
    e("--out", required=True, help="output .json file")
    e("--world", help="world directory: evaluates its forget, retain, neighbours and holdout splits")
    e("--data", help="a QA data file to evaluate (knowledge suite)")
    e("--retrained", help="the gold model (trained without the forget data): forget quality and PrivLeak")
    e("--original", help="the model before unlearning: the abilities table's reference column")
    e("--suite", help="comma-separated: knowledge, mia, abilities (default: all three with --world, "
                      "knowledge with --data alone)")
    e("--field-map", help="map other schemas' fields for --data, e.g. prompt=question,answer=answer")
    e("--lm-eval-tasks", help="comma-separated lm-evaluation-harness tasks run on the same models "
                              "(e.g. mmlu,truthfulqa_mc2; real benchmarks need the hub or a datasets cache)")
    e("--lm-eval-include-path", "--lm-eval-include", dest="lm_eval_include_path",
      help="directory of local lm-eval task YAMLs")
    e("--lm-eval-limit", type=int, help="at most this many documents per lm-eval task")
    e("--lm-eval-fewshot", type=int, help="number of few-shot examples for the lm-eval tasks")
    e("--force", action="store_true", help="replace --out if it exists")
    evaluation.set_defaults(run=_eval)

    export = sub.add_parser("export", parents=[common], help="re-save a model or run as a Hugging Face directory",
                            description="Re-save a model directory or a run's model/ as a Hugging Face model "
                                        "directory (e.g. to change the dtype or shard the weights).")
    export.add_argument("--model", required=True, help="model directory, run directory, or hub id (online)")
    export.add_argument("--out", required=True, help="output Hugging Face model directory (must not exist)")
    export.add_argument("--dtype", choices=DTYPES, default=None, help="dtype of the saved weights (default: as loaded)")
    export.add_argument("--max-shard-size", type=int, default=None, metavar="BYTES",
                        help="split the weights into shards of at most this many bytes (+ index)")
    export.add_argument("--force", action="store_true", help="replace --out if it exists")
    export.set_defaults(run=_export)
    _diffusion_parser(sub, common)
    demo = sub.add_parser("demo", parents=[common], help="every pitfall on the embedded default, one report",
                          description="World, base and gold models, five unlearning methods plus selective and "
                                      "curriculum NPO, the audit of each, evaluation (knowledge, MIA, abilities) "
                                      "-> DIR/report.md, DIR/results.json, DIR/plots/. About 5 minutes on 2 cores "
                                      "from a cold cache; --quick about 1 minute.")
    demo.add_argument("--out", default="runs/demo", help="output directory (replaced only when the demo succeeds)")
    demo.add_argument("--quick", action="store_true", help="the reduced plan on a 30-person world")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--diffusion", action="store_true",
                      help="add the diffusion part: train the tiny DDPM (about 4 min the first time, then cached), "
                           "erase red, attack the erasure")
    demo.set_defaults(run=_demo)
    return parser


def _demo(args) -> None:
    from unlearn_jax.runs.demo import demo

    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    demo(args.out, quick=args.quick, seed=args.seed, diffusion=args.diffusion, quiet=args.quiet)


def _diffusion_parser(sub, common) -> None:
    diffusion = sub.add_parser("diffusion", help="concept erasure in a tiny conditional DDPM (procedural images)",
                               description="The diffusion-model part: train a tiny conditional DDPM on procedural "
                                           "16x16 images (colour x background), erase a concept, attack the "
                                           "erasure with a soft prompt, erase concepts in sequence.")
    dsub = diffusion.add_subparsers(dest="diffusion_command", required=True, parser_class=OneLineParser,
                                    metavar="{train,unlearn,attack,sequential}")
    train = dsub.add_parser("train", parents=[common], help="train the base DDPM and its evaluator (cached)")
    t = train.add_argument
    t("--out", required=True, help="run directory")
    t("--preset", default="tiny", help="tiny (3000 steps, ~3 min on 2 cores) | test (1200 steps)")
    t("--steps", type=int, help="training steps (default: the preset's)")
    t("--seed", type=int, default=0)
    t("--samples-per-prompt", type=int, default=8, help="samples per prompt for the quality metrics")
    t("--resume", action="store_true")
    t("--force", action="store_true")
    t("--no-cache", action="store_true")
    train.set_defaults(run=_diffusion_train)

    def erase_options(u) -> None:
        u("--objective", default="seed", help="seed (the seed paper's, stop-gradient on c') | esd (negative guidance)")
        u("--anchor", default="<null>", help="c': <null> (default) or another word of the concept's axis")
        u("--params", default="full", help="full | xattn (cross-attention only, ESD-x) | non-xattn (ESD-u)")
        u("--beta", type=float, default=1.0, help="weight of the retain DDPM loss")
        u("--eta", type=float, default=1.0, help="ESD's negative-guidance scale")
        u("--steps", type=int, default=150)
        u("--lr", type=float, default=1e-4)
        u("--batch-size", type=int, default=32)
        u("--seed", type=int, default=0)
        u("--samples-per-prompt", type=int, default=8)
        u("--resume", action="store_true")
        u("--force", action="store_true")

    erase = dsub.add_parser("unlearn", parents=[common], help="erase one concept")
    erase.add_argument("--model", required=True, help="diffusion model or run directory")
    erase.add_argument("--concept", required=True, help="a colour (red, green, ...) or background (black, ...)")
    erase.add_argument("--out", required=True, help="run directory")
    erase_options(erase.add_argument)
    erase.set_defaults(run=_diffusion_unlearn)

    seq = dsub.add_parser("sequential", parents=[common], help="erase concepts one after another (rebound)")
    seq.add_argument("--model", required=True, help="diffusion model or run directory")
    seq.add_argument("--concepts", required=True, help="comma-separated, in request order (e.g. red,green,blue)")
    seq.add_argument("--out", required=True, help="output directory (request_K/ runs, sequential.json)")
    erase_options(seq.add_argument)
    seq.set_defaults(run=_diffusion_sequential)

    atk = dsub.add_parser("attack", parents=[common], help="soft-prompt attack on an erased concept")
    a = atk.add_argument
    a("--model", required=True, help="the unlearned model (run directory)")
    a("--original", required=True, help="the model before unlearning (the ceiling)")
    a("--concept", required=True)
    a("--out", required=True, help="output directory (attack.json, samples.png)")
    a("--steps", type=int, default=100)
    a("--lr", type=float, default=0.05)
    a("--batch-size", type=int, default=32)
    a("--seed", type=int, default=0)
    a("--samples-per-prompt", type=int, default=16)
    a("--force", action="store_true")
    atk.set_defaults(run=_diffusion_attack)


def _world(args) -> None:
    from unlearn_jax.data.world import build_world, parse_exposure

    manifest = build_world(args.out, seed=args.seed, people=args.people, forget_frac=args.forget_frac,
                           requests=args.requests, exposure=parse_exposure(args.exposure), force=args.force)
    if not args.quiet:
        sizes = ", ".join(f"{name} {v['records']}" for name, v in manifest["splits"].items())
        print(f"wrote {os.path.abspath(args.out)}: {sizes}")


def _pretrain(args) -> None:
    from unlearn_jax.runs.pretrain import pretrain

    pretrain(args.data, args.out, preset=args.preset, exclude=tuple(args.exclude), steps=args.steps, seed=args.seed,
             mesh_spec=args.mesh, resume=args.resume, force=args.force, use_cache=not args.no_cache,
             quiet=args.quiet)


def _unlearn(args) -> None:
    from unlearn_jax.config import UnlearnConfig, build_config
    from unlearn_jax.runs.unlearn import unlearn

    cli = {k: v for k, v in vars(args).items() if k not in ("run", "command", "config", "quiet", "debug", "resume",
                                                            "force")}
    if args.stop_when and not args.eval_every:
        cli["eval_every"] = 10
    cfg = build_config(UnlearnConfig, cli, args.config)
    unlearn(cfg, resume=args.resume, force=args.force, quiet=args.quiet)


def _sequential(args) -> None:
    from unlearn_jax.config import UnlearnConfig, build_config
    from unlearn_jax.runs.sequential import sequential

    if not args.requests:
        raise UserError("--requests: give at least one forget data file")
    cli = {k: v for k, v in vars(args).items() if k not in ("run", "command", "config", "quiet", "debug", "resume",
                                                            "force", "requests", "retrained")}
    cli["forget"] = args.requests[0]
    if args.stop_when and not args.eval_every:
        cli["eval_every"] = 10
    cfg = build_config(UnlearnConfig, cli, args.config)
    sequential(cfg, list(args.requests), cfg.out, retrained=args.retrained, resume=args.resume, force=args.force,
               quiet=args.quiet)


def _score(args) -> None:
    from unlearn_jax.runs.score import score

    score(args.model, args.data, args.out, k=args.k, field_map=args.field_map, force=args.force, quiet=args.quiet)


def _audit(args) -> None:
    from unlearn_jax.runs.audit import AuditConfig, audit, parse_floats, parse_ints

    cfg = AuditConfig(model=args.model, original=args.original, retrained=args.retrained, forget=args.forget,
                      retain=args.retain, out=args.out,
                      probes=tuple(p.strip() for p in args.probes.split(",") if p.strip()),
                      quant_schemes=args.quant_schemes, sparsities=parse_floats(args.sparsities, "--sparsities"),
                      relearn_fraction=args.relearn_fraction,
                      relearn_steps=parse_ints(args.relearn_steps, "--relearn-steps"), relearn_lr=args.relearn_lr,
                      capacity_data=args.capacity_data,
                      capacity_steps=parse_ints(args.capacity_steps, "--capacity-steps"),
                      capacity_target=args.capacity_target, max_retain=args.max_retain,
                      attack_facts=args.attack_facts, suffix_length=args.suffix_length, gcg_steps=args.gcg_steps,
                      gcg_candidates=args.gcg_candidates, gcg_top_k=args.gcg_top_k, gcg_loss=args.gcg_loss,
                      embed_steps=args.embed_steps,
                      seed=args.seed, field_map=args.field_map)
    audit(cfg, force=args.force, quiet=args.quiet)


def _eval(args) -> None:
    from unlearn_jax.runs.evaluate import evaluate

    evaluate(args.model, args.out, world=args.world, data=args.data, retrained=args.retrained,
             original=args.original, suites=args.suite, lm_eval_tasks=args.lm_eval_tasks,
             lm_eval_include_path=args.lm_eval_include_path, lm_eval_limit=args.lm_eval_limit,
             lm_eval_fewshot=args.lm_eval_fewshot,
             field_map=args.field_map, force=args.force, quiet=args.quiet)


def _export(args) -> None:
    from unlearn_jax.models.hf import load_model

    out = os.path.abspath(args.out)
    if os.path.exists(out) and not args.force and (not os.path.isdir(out) or os.listdir(out)):
        raise UserError(f"--out {args.out}: already exists (pass --force to replace it)")
    if args.max_shard_size is not None and args.max_shard_size < 1:
        raise UserError("--max-shard-size must be a positive number of bytes")
    lm = load_model(args.model, param_dtype=args.dtype or "float32")
    lm.save_hf(out, dtype=args.dtype, max_shard_bytes=args.max_shard_size)
    if not args.quiet:
        print(f"wrote {out}")


def _erase_config(args):
    from unlearn_jax.diffusion.objectives import EraseConfig

    return EraseConfig(objective=args.objective, anchor=args.anchor, params=args.params, beta=args.beta, eta=args.eta,
                       steps=args.steps, lr=args.lr, batch_size=args.batch_size)


def _positive_samples(args) -> None:
    if args.samples_per_prompt < 1:
        raise UserError(f"--samples-per-prompt must be >= 1 (got {args.samples_per_prompt})")


def _diffusion_train(args) -> None:
    from unlearn_jax.diffusion.runs import train

    _positive_samples(args)
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1 (got {args.steps})")
    train(args.out, preset=args.preset, steps=args.steps, seed=args.seed, samples_per_prompt=args.samples_per_prompt,
          resume=args.resume, force=args.force, use_cache=not args.no_cache, quiet=args.quiet)


def _diffusion_unlearn(args) -> None:
    from unlearn_jax.diffusion.runs import unlearn

    _positive_samples(args)
    unlearn(args.model, args.concept, args.out, _erase_config(args), seed=args.seed,
            samples_per_prompt=args.samples_per_prompt, resume=args.resume, force=args.force, quiet=args.quiet)


def _diffusion_sequential(args) -> None:
    from unlearn_jax.diffusion.runs import sequential

    _positive_samples(args)
    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()]
    sequential(args.model, concepts, args.out, _erase_config(args), seed=args.seed,
               samples_per_prompt=args.samples_per_prompt, resume=args.resume, force=args.force, quiet=args.quiet)


def _diffusion_attack(args) -> None:
    from unlearn_jax.diffusion.attack import AttackConfig
    from unlearn_jax.diffusion.runs import attack

    _positive_samples(args)
    attack(args.model, args.original, args.concept, args.out, AttackConfig(steps=args.steps, lr=args.lr,
                                                                           batch_size=args.batch_size),
           seed=args.seed, samples_per_prompt=args.samples_per_prompt, force=args.force, quiet=args.quiet)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        args.run(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"unlearn-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unlearn-jax {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 — the last line of defence: one line, exit 1
        if args.debug:
            raise
        print(f"unlearn-jax {args.command}: internal error: {type(e).__name__}: {e} (rerun with --debug for "
              "the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
