"""`unlearn-jax demo`: every pitfall on the embedded default, in one command and one report.

world → base and gold models (pretraining is cached) → unlearning with GA, GradDiff, NPO, SimNPO, RMU,
plus selective (drop the 20 % least memorized by Min-K%++) and curriculum (most memorized first) NPO →
memorization scores → the audit of every unlearned model (the original's and gold model's results are
computed once and shared) → evaluation (knowledge, MIA, abilities) → ``DIR/report.md``, ``DIR/results.json``
and ``DIR/plots/*.png``. ``--quick`` runs a reduced plan on a smaller world. Everything happens in one
process, so each jitted function compiles once for all models.

The demo works in ``.DIR.partial`` and replaces ``DIR`` only when complete, so a failing run leaves an
earlier report untouched; ``results.json`` is identical for the same seed and plan but for ``timings``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unlearn_jax.config import UnlearnConfig
from unlearn_jax.data import world as world_lib
from unlearn_jax.data.records import load_records
from unlearn_jax.data.tokenize import encode_records
from unlearn_jax.errors import UserError
from unlearn_jax.evaluation import abilities as abilities_lib
from unlearn_jax.fileio import check_writable_target, replace_directory, write_json_atomic, write_text_atomic
from unlearn_jax.models.hf import load_model
from unlearn_jax.report import plots
from unlearn_jax.report.markdown import fmt, table
from unlearn_jax.runs.audit import AuditConfig, ReferenceCache, audit
from unlearn_jax.runs.evaluate import compare, measure
from unlearn_jax.runs.pretrain import pretrain
from unlearn_jax.runs.rundir import versions
from unlearn_jax.runs.score import target_texts
from unlearn_jax.runs.unlearn import unlearn
from unlearn_jax.scores.memorization import score_records

MARKER = "results.json"  # written last: a directory holding it is a finished demo


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs; ``--quick`` is the reduced plan."""

    people: int
    preset: str  # the pretraining preset (runs.pretrain.PRESETS), at its own number of steps
    methods: tuple[str, ...]
    variants: bool  # selective and curriculum NPO
    probes: tuple[str, ...]
    quant_schemes: str
    sparsities: tuple[float, ...]
    relearn_steps: tuple[int, ...]
    capacity_steps: tuple[int, ...]
    attack_facts: int
    embed_steps: int
    gcg_steps: int
    eval_suites: tuple[str, ...]


PLANS = {
    "full": DemoPlan(people=100, preset="tiny", methods=("ga", "graddiff", "npo", "simnpo", "rmu"),
                     variants=True, probes=("quant", "prune", "relearn", "probe", "capacity", "embed"),
                     quant_schemes="int8,int4", sparsities=(0.3,), relearn_steps=(0, 5, 10, 20),
                     capacity_steps=(0, 10, 20, 40), attack_facts=4, embed_steps=60, gcg_steps=20,
                     eval_suites=("knowledge", "mia", "abilities")),
    "quick": DemoPlan(people=30, preset="micro", methods=("npo", "rmu"), variants=False,
                      probes=("quant", "relearn"), quant_schemes="int8,int4", sparsities=(0.3,),
                      relearn_steps=(0, 5, 10), capacity_steps=(0, 10), attack_facts=2, embed_steps=30,
                      gcg_steps=10, eval_suites=("knowledge", "mia", "abilities")),
}
VARIANTS = {"npo_selective": {"method": "npo", "select": "minkpp", "drop": 0.2},
            "npo_curriculum": {"method": "npo", "curriculum": "confidence", "stages": 3}}
EVAL_SPLITS = ("forget", "retain", "neighbours", "holdout")
EVAL_RETAIN = 400  # evaluation uses a seeded sample of the retain split (as the audit does)


class Stages:
    """A bar over the demo's stages (with an ETA) and the wall time of each."""

    def __init__(self, names: list[str], quiet: bool):
        self.names, self.times = names, {}
        self.bar = tqdm(total=len(names), unit="stage", disable=quiet, dynamic_ncols=True, desc="demo")

    def run(self, name: str, fn):
        self.bar.set_description(f"demo: {name}")
        began = time.perf_counter()
        result = fn()
        self.times[name] = round(time.perf_counter() - began, 2)
        self.bar.update(1)
        return result

    def close(self):
        self.bar.close()


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"--out {out}: exists and is not a previous demo's output (no {MARKER}); choose another "
                        "directory")
    check_writable_target(out)


def demo(out: str = "runs/demo", *, quick: bool = False, seed: int = 0, diffusion: bool = False,
         quiet: bool = False) -> dict:
    """Run the demo plan into ``out`` (replaced only on success); return results.json's content.
    ``diffusion`` adds the DDPM part (train, erase ``red``, attack the erasure)."""
    plan = PLANS["quick" if quick else "full"]
    out_path = Path(out).absolute()
    _check_out(out_path)
    work = out_path.parent / f".{out_path.name}.partial"
    if work.exists():
        shutil.rmtree(work)
    (work / "plots").mkdir(parents=True)
    names = plan.methods + (tuple(VARIANTS) if plan.variants else ())
    stages = Stages(["world", "base model", "gold model", *(f"unlearn {n}" for n in names), "scores",
                     *(f"audit {n}" for n in names), *(f"eval {n}" for n in ("original", "gold", *names)),
                     *(("diffusion train", "diffusion unlearn", "diffusion attack") if diffusion else ()), "report"],
                    quiet)
    started = time.perf_counter()
    try:
        results = _run(plan, work, seed, stages, names)
        if diffusion:
            results["diffusion"] = _diffusion(work / "diffusion", seed, quick, stages)
        results["timings"] = {"stages_s": stages.times, "wall_s": round(time.perf_counter() - started, 2)}
        stages.run("report", lambda: write_report(work, plan, seed, results, quick))
        results["timings"]["wall_s"] = round(time.perf_counter() - started, 2)
        write_json_atomic(work / MARKER, results)
    except BaseException:
        stages.close()
        shutil.rmtree(work, ignore_errors=True)
        raise
    stages.close()
    replace_directory(work, out_path)
    if not quiet:
        print(summary_text(results, out_path))
    return results


def _run(plan: DemoPlan, work: Path, seed: int, stages: Stages, names: tuple[str, ...]) -> dict:
    world = work / "world"
    stages.run("world", lambda: world_lib.build_world(world, seed=seed, people=plan.people))
    base, gold = work / "base", work / "gold"
    stages.run("base model", lambda: pretrain(str(world), str(base), preset=plan.preset, seed=seed, quiet=True))
    stages.run("gold model", lambda: pretrain(str(world), str(gold), preset=plan.preset, seed=seed,
                                              exclude=("forget",), quiet=True))
    forget, retain = str(world / "forget.jsonl"), str(world / "retain.jsonl")
    runs = {}
    for name in names:
        options = VARIANTS.get(name, {"method": name})
        monitor = {"eval_every": 10} if plan.variants and options["method"] == "npo" else {}
        cfg = UnlearnConfig(model=str(base), forget=forget, retain=retain, out=str(work / "models" / name),
                            seed=seed, **options, **monitor)
        runs[name] = stages.run(f"unlearn {name}", lambda c=cfg: unlearn(c, force=True, quiet=True))
    scores = stages.run("scores", lambda: _scores(base, gold, forget))
    cache = ReferenceCache()
    audits = {}
    for name in names:
        cfg = AuditConfig(model=str(work / "models" / name), original=str(base), retrained=str(gold), forget=forget,
                          retain=retain, out=str(work / "audits" / name), probes=plan.probes,
                          quant_schemes=plan.quant_schemes, sparsities=plan.sparsities,
                          relearn_steps=plan.relearn_steps, capacity_steps=plan.capacity_steps,
                          attack_facts=plan.attack_facts, embed_steps=plan.embed_steps, gcg_steps=plan.gcg_steps,
                          seed=seed)
        audits[name] = stages.run(f"audit {name}", lambda c=cfg: audit(c, force=True, quiet=True, cache=cache))
    manifest = world_lib.load_world(world)
    splits = {s: load_records(world_lib.world_path(manifest, f"{s}.jsonl")) for s in EVAL_SPLITS}
    keep = np.sort(np.random.default_rng(seed).permutation(len(splits["retain"]))[:EVAL_RETAIN])
    splits["retain"] = [splits["retain"][i] for i in keep]
    skills = abilities_lib.skill_records(manifest)
    measured = {}
    for name, path in (("original", base), ("gold", gold), *((n, work / "models" / n) for n in names)):
        measured[name] = stages.run(f"eval {name}", lambda p=path: measure(load_model(p), plan.eval_suites, splits,
                                                                           skills))
    evals = {name: compare({"model": measured[name], "original": measured["original"], "retrained": measured["gold"]})
             for name in ("original", "gold", *names)}
    return {"seed": seed, "plan": dataclasses.asdict(plan), "world": {k: v for k, v in manifest.items() if k in (
                "seed", "people", "templates_version", "world_hash", "splits")},
            "models": {"base": _pretrain_summary(base), "gold": _pretrain_summary(gold)},
            "unlearn": {name: _unlearn_summary(work / "models" / name, run) for name, run in runs.items()},
            "scores": scores, "audit": {name: _audit_summary(a) for name, a in audits.items()},
            "eval": {name: _eval_summary(e) for name, e in evals.items()}, "versions": versions()}


def _diffusion(root: Path, seed: int, quick: bool, stages: Stages) -> dict:
    """Train the DDPM (cached), erase ``red`` with the seed objective, attack the erasure with a soft prompt."""
    from unlearn_jax.diffusion import runs as dm

    base, erased, attacked = root / "base", root / "red", root / "attack"
    trained = stages.run("diffusion train", lambda: dm.train(str(base), preset="test" if quick else "tiny", seed=seed,
                                                             quiet=True))
    run = stages.run("diffusion unlearn", lambda: dm.unlearn(str(base), "red", str(erased), seed=seed, quiet=True))
    attack = stages.run("diffusion attack", lambda: dm.attack(str(erased), str(base), "red", str(attacked),
                                                              seed=seed, quiet=True))
    return {"preset": trained["config"]["preset"], "base": {k: trained["metrics"][k] for k in ("accuracy", "fd")},
            "before": run["metrics"]["before"], "after": run["metrics"]["after"],
            "attack": attack["concept_rate"]}


def _scores(base: Path, gold: Path, forget: str) -> dict:
    records = load_records(forget)
    out = {}
    for name, path in (("original", base), ("gold", gold)):
        lm = load_model(path)
        rows = score_records(lm.params, lm.config, encode_records(records, lm.tokenizer), target_texts(records))
        out[name] = {score: [round(r[score], 6) for r in rows] for score in ("mink", "minkpp")}
    return out


def _pretrain_summary(run: Path) -> dict:
    acc = json.loads((run / "run.json").read_text())["metrics"]["accuracy"]
    return {split: acc[split]["acc"] for split in ("forget", "retain", "holdout")}


def _unlearn_summary(run_dir: Path, run: dict) -> dict:
    curve = [[m["step"], m["forget_acc"], m.get("retain_acc")] for m in
             (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
             if "forget_acc" in m]
    return {"config": {k: v for k, v in run["config"].items() if k in ("method", "select", "drop", "curriculum",
                                                                         "stages")},
            "resolved": {"lr": run["resolved"]["optimizer"]["lr"], "steps": run["metrics"]["steps"],
                         "selection": run["resolved"]["selection"]},
            "before": run["metrics"]["before"], "after": run["metrics"]["after"], "curve": curve}


def _audit_summary(result: dict) -> dict:
    probes = result["probes"]
    out = {"overall": result["overall"], "verdicts": {name: p["verdict"] for name, p in probes.items()}}
    if "relearn" in probes:
        out["relearn"] = {role: [[c["step"], c["heldout"]["acc"]] for c in probes["relearn"][role]["forget"]]
                          for role in ("model", "original", "retrained")}
    if "quant" in probes:
        schemes = list(probes["quant"]["changed_codes_vs_original"])
        out["quant"] = {role: {s: probes["quant"][role][s]["forget"]["acc"] for s in ["clean", *schemes]}
                        for role in ("model", "original", "retrained")}
        out["changed_codes"] = {s: probes["quant"]["changed_codes_vs_original"][s]["all"] for s in schemes}
    if "probe" in probes:
        out["probe"] = {role: [row["probe_forget"] for row in probes["probe"][role]["layers"]]
                        for role in ("model", "original", "retrained")}
    if "capacity" in probes:
        out["capacity"] = {role: probes["capacity"][role]["final"]["acc"] for role in ("model", "retrained")}
    for attack in ("embed", "gcg"):
        if attack in probes:
            out[attack] = {role: probes[attack][role]["per_fact_success"] for role in ("model", "retrained")}
    return out


def _eval_summary(result: dict) -> dict:
    knowledge = result.get("knowledge", {})
    out = {split: {k: knowledge[split][k] for k in ("acc", "prob", "truth", "rouge_l_recall") if k in knowledge[split]}
           for split in EVAL_SPLITS if split in knowledge}
    out |= {k: knowledge[k] for k in ("model_utility", "forget_quality") if k in knowledge}
    if "mia" in result:
        out["mia_auc"] = result["mia"]["auc"]
        out["priv_leak"] = result["mia"].get("priv_leak")
    if "abilities" in result:
        out["abilities"] = {row["key"]: row["model"] for row in result["abilities"]["table"]}
    return out


def _verdict_cell(summary: dict | None) -> str:
    if summary is None:
        return "–"
    flagged = [probe for probe, verdict in summary["verdicts"].items() if verdict != "removed"]
    overall = summary["overall"].replace("_", " ")
    return f"**{overall}** ({', '.join(flagged)})" if flagged else overall


def write_report(work: Path, plan: DemoPlan, seed: int, results: dict, quick: bool) -> None:
    """``report.md`` and its plots, from ``results``."""
    names = list(results["unlearn"])
    ev, au, _un = results["eval"], results["audit"], results["unlearn"]
    md = [f"# unlearn-jax demo{' (quick)' if quick else ''}\n",
          f"Seed {seed}; world of {results['world']['people']} people ({results['world']['templates_version']}); "
          f"wall time {results['timings']['wall_s']:.0f} s. Produced by `unlearn-jax demo"
          f"{' --quick' if quick else ''} --seed {seed}`; every number is also in `results.json`.\n",
          "## Headline\n"]
    rows = []
    for name in ["original", "gold", *names]:
        e = ev[name]
        rows.append([name, e["forget"]["acc"], e["retain"]["acc"], _g(e.get("forget_quality")), e.get("model_utility"),
                     e["mia_auc"]["minkpp"], _signed(e["priv_leak"]["minkpp"]) if e.get("priv_leak") else "–",
                     _verdict_cell(au.get(name))])
    md.append(table(["model", "forget acc ↓", "retain acc ↑", "forget quality ↑", "utility ↑", "MIA AUC (Min-K%++)",
                     "PrivLeak (→ 0)", "audit (probes that found it)"], rows))
    md.append(f"\nRetain accuracy and utility are measured on a seeded sample of {EVAL_RETAIN} retain records. "
              "Forget quality: KS-test p-value of truth ratios against the gold model (1 = indistinguishable). "
              "PrivLeak: (AUC − AUC_gold) / AUC_gold; > 0 the forget set still looks trained on, < 0 it looks "
              "less familiar than never-seen people. Verdicts compare each attack's effect on the unlearned model "
              "with its effect on the gold model (paired bootstrap, margin 0.05).\n")
    md.append(_pitfall1(work, au, names))
    md.append(_pitfall2(work, results, names))
    md.append(_pitfall3(work, ev, names))
    if "diffusion" in results:
        md.append(_diffusion_section(results["diffusion"], seed))
    md.append(_reproduce(plan, seed, results, quick, names))
    write_text_atomic(work / "report.md", "\n".join(md))


def _g(v) -> str:
    return "–" if v is None else f"{v:.2g}"


def _signed(v) -> str:
    return f"{v:+.2f}"


def _pitfall1(work: Path, au: dict, names: list[str]) -> str:
    md = ["\n## Pitfall 1: hidden, not removed\n"]
    first = au[names[0]]
    if "relearn" in first:
        series = {name: tuple(map(list, zip(*au[name]["relearn"]["model"], strict=True))) for name in names}
        series["gold"] = tuple(map(list, zip(*first["relearn"]["retrained"], strict=True)))
        styles = {"gold": {"color": "black", "linestyle": "--"}}
        plots.lines(work / "plots" / "relearn.png", series, styles=styles, xlabel="fine-tuning steps on 20 % of the "
                    "forget facts", ylabel="accuracy on the other 80 %", title="Relearning")
        md.append("Fine-tuning on a fifth of the forget facts: knowledge that returns on the *other* facts faster "
                  "than the gold model learns them was hidden.\n\n![relearning](plots/relearn.png)\n")
    if "quant" in first:
        schemes = [s for s in first["quant"]["model"] if s != "clean"]
        groups = ["clean", *schemes]
        series = {name: [au[name]["quant"]["model"][s] for s in groups] for name in names}
        series["gold"] = [first["quant"]["retrained"][s] for s in groups]
        plots.grouped_bars(work / "plots" / "quant.png", groups, series, title="Forget accuracy after quantization",
                           ylabel="forget accuracy")
        plots.grouped_bars(work / "plots" / "changed_codes.png", schemes,
                           {name: [au[name]["changed_codes"][s] for s in schemes] for name in names},
                           title="Share of quantized weights unlearning changed", ylabel="changed codes")
        md.append("![quantization](plots/quant.png)\n\nWhere unlearning moves few weights by more than half a "
                  "quantization step, quantization can undo it:\n\n![changed codes](plots/changed_codes.png)\n")
    if "probe" in first:
        layers = list(range(len(first["probe"]["model"])))
        series = {name: (layers, au[name]["probe"]["model"]) for name in names}
        series["gold"] = (layers, first["probe"]["retrained"])
        plots.lines(work / "plots" / "probe.png", series, styles={"gold": {"color": "black", "linestyle": "--"}},
                    xlabel="layer", ylabel="forget answers decoded by a linear probe",
                    title="Forget knowledge in hidden states")
        md.append("![probes](plots/probe.png)\n")
    rows = [[name, au[name]["overall"], *(au[name]["verdicts"][p] for p in au[name]["verdicts"])] for name in names]
    md.append(table(["model", "overall", *au[names[0]]["verdicts"]], rows))
    md.append("\nEach audit's full report (tables, per-probe plots) is in `audits/NAME/report.md`.\n")
    return "\n".join(md)


def _pitfall2(work: Path, results: dict, names: list[str]) -> str:
    scores = results["scores"]
    md = ["\n## Pitfall 2: blind unlearning — memorization\n"]
    plots.histogram(work / "plots" / "minkpp.png", {"original": scores["original"]["minkpp"],
                                                    "gold": scores["gold"]["minkpp"]},
                    xlabel="Min-K%++ of the forget answers (higher = more memorized)", title="Memorization")
    md.append("![Min-K%++](plots/minkpp.png)\n")
    variants = [n for n in names if n in VARIANTS]
    if variants:
        un, ev = results["unlearn"], results["eval"]
        rows = [[n, un[n]["resolved"]["selection"]["kept"] if un[n]["resolved"]["selection"] else "all",
                 ev[n]["forget"]["acc"], ev[n]["retain"]["acc"], ev[n].get("model_utility"),
                 results["audit"][n]["overall"]] for n in ["npo", *variants]]
        md.append(table(["NPO variant", "forget records trained on", "forget acc", "retain acc", "utility",
                         "audit"], rows))
        series = {n: ([c[0] for c in un[n]["curve"]], [c[1] for c in un[n]["curve"]]) for n in ["npo", *variants]}
        plots.lines(work / "plots" / "variants.png", series, xlabel="unlearning step",
                    ylabel="forget accuracy (whole forget set)", title="Selective and curriculum NPO")
        md.append("\nSelective: the 20 % least memorized forget records (by Min-K%++) are not unlearned; forgetting "
                  "is still measured on the whole set. Curriculum: three stages, most memorized first.\n\n"
                  "![variants](plots/variants.png)\n")
    return "\n".join(md)


def _pitfall3(work: Path, ev: dict, names: list[str]) -> str:
    md = ["\n## Pitfall 3: side effects beyond the forget set\n"]
    if "abilities" not in ev["original"]:
        return ""
    cols = ["original", *names, "gold"]
    rows = []
    for key, label, higher in abilities_lib.HEADLINE:
        base = ev["original"]["abilities"][key]
        rows.append([label, {True: "↑", False: "↓", None: "≈ gold"}[higher], *(
            fmt(ev[n]["abilities"][key]) + ("" if n in ("original", "gold") else
                                            f" ({ev[n]['abilities'][key] - base:+.2f})") for n in cols)])
    md.append(table(["ability", "better", *cols], rows))
    plots.grouped_bars(work / "plots" / "abilities.png", [label for _, label, _ in abilities_lib.HEADLINE],
                       {n: [ev[n]["abilities"][k] for k, _, _ in abilities_lib.HEADLINE] for n in cols},
                       title="Abilities: original / unlearned / gold", ylabel="share")
    md.append("\n(change against the original in brackets)\n\n![abilities](plots/abilities.png)\n")
    return "\n".join(md)


def _diffusion_section(d: dict, seed: int) -> str:
    b, a, r = d["before"], d["after"], d["attack"]
    rows = [["original", b["ua"]["red"], b["ira"], b["cra"], f"{b['fd']:.0f}"],
            ["red erased (seed objective)", a["ua"]["red"], a["ira"], a["cra"], f"{a['fd']:.0f}"]]
    return ("\n## Diffusion: erasing a concept, and bringing it back\n\n"
            f"A tiny conditional DDPM (`{d['preset']}` preset) on procedural colour × background images; the "
            "concept `red` erased with ‖sg[ε(x_t|c′)] − ε(x_t|c)‖² + β·MSE_retain (c′ = `<null>`). UA = share of "
            "red-prompt samples the evaluator does *not* call red; IRA / CRA = the evaluator's accuracy on the other "
            "colours / on backgrounds; FD = Fréchet distance of evaluator features to real images.\n\n"
            + table(["model", "UA (red) ↑", "IRA ↑", "CRA ↑", "FD ↓"], rows)
            + f"\nSoft-prompt attack (the token embedding of `red` optimised on real red images): samples called red "
              f"— original {r['original']:.2f}, erased {r['unlearned']:.2f}, erased + attack {r['attacked']:.2f}.\n\n"
              "![base samples](diffusion/base/samples.png)\n\n![after erasing red](diffusion/red/samples.png)\n\n"
              "![attack](diffusion/attack/samples.png)\n\n"
              f"`unlearn-jax diffusion train --out DM --preset {d['preset']} --seed {seed}`, `unlearn-jax diffusion "
              f"unlearn --model DM --concept red --out DM_RED --seed {seed}`, `unlearn-jax diffusion attack --model "
              f"DM_RED --original DM --concept red --out ATTACK --seed {seed}`.\n")


def _reproduce(plan: DemoPlan, seed: int, results: dict, quick: bool, names: list[str]) -> str:
    cmds = [f"unlearn-jax world --out W --seed {seed} --people {plan.people}",
            f"unlearn-jax pretrain --data W --out BASE --seed {seed} --preset {plan.preset}",
            f"unlearn-jax pretrain --data W --out GOLD --seed {seed} --preset {plan.preset} --exclude forget"]
    for name in names:
        c = results["unlearn"][name]["config"]
        extra = "".join(f" --{k} {v}" for k, v in c.items() if k != "method" and v not in (None, 0, 0.0, "none", 1))
        monitor = " --eval-every 10" if plan.variants and c["method"] == "npo" else ""
        cmds.append(f"unlearn-jax unlearn --model BASE --forget W/forget.jsonl --retain W/retain.jsonl --method "
                    f"{c['method']}{extra}{monitor} --seed {seed} --out {name.upper()}")
    cmds.append(f"unlearn-jax audit --model NPO --original BASE --retrained GOLD --forget W/forget.jsonl --retain "
                f"W/retain.jsonl --probes {','.join(plan.probes)} --quant-schemes {plan.quant_schemes} "
                f"--sparsities {','.join(f'{s:g}' for s in plan.sparsities)} "
                f"--relearn-steps {','.join(map(str, plan.relearn_steps))} "
                f"--capacity-steps {','.join(map(str, plan.capacity_steps))} --attack-facts {plan.attack_facts} "
                f"--embed-steps {plan.embed_steps} --seed {seed} --out AUDIT_NPO"
                "   # and likewise for every model")
    cmds.append("unlearn-jax eval --model NPO --world W --original BASE --retrained GOLD --out EVAL_NPO.json"
                f"   # on the whole retain split (the demo: a seeded {EVAL_RETAIN}-record sample)")
    cmds.append("unlearn-jax score --model BASE --data W/forget.jsonl --out SCORES.jsonl --k 0.2")
    times = table(["stage", "seconds"], [[k, v] for k, v in results["timings"]["stages_s"].items()])
    vers = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
    return ("\n## Reproduce\n\nThe demo runs these steps in one process (so each jitted function compiles once); "
            "the commands give the same numbers (but retain metrics, see the eval line):\n\n```\n"
            + "\n".join(cmds) + "\n```\n\n"
            f"Versions: {vers}.\n\n### Wall time per stage\n\n" + times)


def summary_text(results: dict, out: Path) -> str:
    lines = [f"demo: {out}/report.md  ({results['timings']['wall_s']:.0f} s)"]
    for name, e in results["eval"].items():
        overall = results["audit"].get(name, {}).get("overall", "–")
        lines.append(f"  {name:<15} forget {e['forget']['acc']:.3f}  retain {e['retain']['acc']:.3f}  "
                     f"audit {overall}")
    return "\n".join(lines)
