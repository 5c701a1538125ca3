"""report.md and the audit's plots, from the (hit-stripped) audit result."""

from __future__ import annotations

from pathlib import Path

from unlearn_jax.fileio import write_text_atomic
from unlearn_jax.report import plots
from unlearn_jax.report.markdown import fmt, table

ROLE_NAMES = {"model": "unlearned (M)", "original": "original (M0)", "retrained": "gold (MR)"}


def _roles(result: dict) -> list[str]:
    return [r for r in ROLE_NAMES if r in result["clean"]]


def _ci(test: dict) -> str:
    return f"{test['excess']:+.3f} [{test['ci'][0]:+.3f}, {test['ci'][1]:+.3f}]"


def write_report(folder: Path, result: dict, cfg) -> None:
    roles = _roles(result)
    probes = result["probes"]
    md = [f"# Unlearning audit: {result['overall'].upper()}\n",
          f"- unlearned model: `{cfg.model}`\n- original: `{cfg.original}`\n"
          f"- gold (retrained without the forget data): `{cfg.retrained or 'not given'}`\n"
          f"- forget: `{cfg.forget}`; retain: `{cfg.retain}`\n- judgement: {result['judgement']}\n"
          f"- a difference counts when it exceeds {result['margin']} and its {result['confidence']:.0%} paired "
          "bootstrap interval excludes 0 (`unlearn_jax/audit/verdict.py`)\n",
          "## Verdicts\n"]
    rows = []
    for name, probe in probes.items():
        part = probe.get("linear", probe)
        tests = part.get("tests", {})
        worst = part.get("worst_setting") or next(iter(tests), None)
        rows.append([name, f"**{probe['verdict']}**", _ci(part["before"]), worst or "–",
                     _ci(tests[worst]) if worst else "–"])
    md.append(table(["probe", "verdict", "excess before attack [95% CI]", "worst setting", "excess under it"],
                    rows))
    md.append("\nExcess = forget knowledge of M minus the baseline's (the gold model under the same attack, or M "
              "before the attack without one); before the attack without a gold model: original minus M.\n")
    md.append("\n## Knowledge before any attack\n")
    md.append(table(["model", "forget acc", "forget NLL", "retain acc", "retain NLL"],
                    [[ROLE_NAMES[r], result["clean"][r]["forget"]["acc"], result["clean"][r]["forget"]["nll"],
                      result["clean"][r]["retain"]["acc"], result["clean"][r]["retain"]["nll"]] for r in roles]))
    for name, writer in (("quant", _quant), ("prune", _prune), ("relearn", _relearn), ("probe", _probe),
                         ("capacity", _capacity)):
        if name in probes:
            md.append(writer(folder, probes[name], roles))
    for name, title in (("gcg", "GCG adversarial suffix"), ("embed", "Embedding-space (soft) suffix")):
        if name in probes:
            md.append(_adversarial(probes[name], roles, title))
    write_text_atomic(folder / "report.md", "\n".join(md))


def _attack_table(probe: dict, roles: list[str], settings: list[str]) -> str:
    headers = ["setting"] + [f"{ROLE_NAMES[r]} forget / retain acc" for r in roles]
    rows = [[s] + [f"{fmt(probe[r][s]['forget']['acc'])} / {fmt(probe[r][s]['retain']['acc'])}" for r in roles]
            for s in ["clean", *settings]]
    return table(headers, rows)


def _quant(folder: Path, probe: dict, roles: list[str]) -> str:
    schemes = list(probe["changed_codes_vs_original"])
    plots.grouped_bars(folder / "quant.png", ["clean", *schemes],
                       {ROLE_NAMES[r]: [probe[r][s]["forget"]["acc"] for s in ["clean", *schemes]] for r in roles},
                       title="Forget accuracy after weight quantization", ylabel="forget accuracy",
                       colours={ROLE_NAMES[r]: plots.MODEL_COLOURS[r] for r in roles})
    layers = [k for k in probe["changed_codes_vs_original"][schemes[0]] if k != "all"]
    plots.grouped_bars(folder / "changed_codes.png", [f"layer {k}" for k in layers],
                       {s: [probe["changed_codes_vs_original"][s][k] for k in layers] for s in schemes},
                       title="Share of quantized codes that unlearning changed (M vs M0)", ylabel="changed codes")
    codes = table(["scheme", "changed codes (all layers)"],
                  [[s, probe["changed_codes_vs_original"][s]["all"]] for s in schemes])
    return ("\n## Quantization (round-to-nearest, weight-only)\n\n"
            + _attack_table(probe, roles, schemes) + "\n![quantization](quant.png)\n\n"
            "Changed codes: the share of weights whose integer code differs between M and M0 (each quantized "
            "with its own scales); updates smaller than half a bucket vanish under quantization.\n\n"
            + codes + "\n![changed codes](changed_codes.png)\n")


def _prune(folder: Path, probe: dict, roles: list[str]) -> str:
    settings = [k for k in probe["model"] if k != "clean"]
    plots.grouped_bars(folder / "prune.png", ["clean", *settings],
                       {ROLE_NAMES[r]: [probe[r][s]["forget"]["acc"] for s in ["clean", *settings]] for r in roles},
                       title="Forget accuracy after pruning", ylabel="forget accuracy",
                       colours={ROLE_NAMES[r]: plots.MODEL_COLOURS[r] for r in roles})
    return ("\n## Pruning (magnitude and Wanda)\n\n" + _attack_table(probe, roles, settings)
            + "\n![pruning](prune.png)\n")


def _relearn(folder: Path, probe: dict, roles: list[str]) -> str:
    series, styles, rows = {}, {}, []
    for source in ("forget", "retain"):
        for r in roles:
            curve = probe[r][source]
            label = f"{ROLE_NAMES[r]}, on {source}"
            series[label] = ([c["step"] for c in curve], [c["heldout"]["acc"] for c in curve])
            styles[label] = {"color": plots.MODEL_COLOURS[r], "linestyle": "-" if source == "forget" else "--"}
            rows.append([source, ROLE_NAMES[r]] + [c["heldout"]["acc"] for c in curve])
    steps = [c["step"] for c in probe[roles[0]]["forget"]]
    plots.lines(folder / "relearn.png", series, styles=styles, xlabel="fine-tuning steps",
                ylabel="accuracy on held-out forget facts",
                title=f"Relearning on {probe['split']['fraction']:.0%} of the forget facts (solid) "
                      "or on retain (dashed)")
    return ("\n## Relearning\n\n"
            f"Fine-tune on {probe['split']['relearn_records']} forget records (or as many retain records); "
            f"accuracy on the other {probe['split']['heldout_records']} forget records:\n\n"
            + table(["fine-tuned on", "model"] + [f"step {s}" for s in steps], rows) + "\n![relearning](relearn.png)\n")


def _probe(folder: Path, probe: dict, roles: list[str]) -> str:
    layers = [row["layer"] for row in probe[roles[0]]["layers"]]
    series, styles = {}, {}
    for r in roles:
        for kind, key, dash in (("linear probe", "probe_forget", "-"), ("logit lens", "logit_lens_forget", ":")):
            label = f"{ROLE_NAMES[r]}, {kind}"
            series[label] = (layers, [row[key] for row in probe[r]["layers"]])
            styles[label] = {"color": plots.MODEL_COLOURS[r], "linestyle": dash}
    plots.lines(folder / "probe.png", series, styles=styles, xlabel="layer", ylabel="forget answers decoded",
                title="Forget answers decodable from hidden states")
    rows = [[layer] + [f"{fmt(probe[r]['layers'][layer]['probe_forget'])} / "
                       f"{fmt(probe[r]['layers'][layer]['logit_lens_forget'])}" for r in roles] for layer in layers]
    sanity = ", ".join(f"{ROLE_NAMES[r]} {fmt(max((row['probe_retain_heldout'] or 0) for row in probe[r]['layers']))}"
                       for r in roles)
    return ("\n## Probes (linear probe / logit lens, by layer)\n\n"
            f"Probes trained on retain facts of {', '.join(probe[roles[0]]['groups'])}, tested on "
            f"{probe[roles[0]]['tested_forget_records']} forget records; chance {fmt(probe[roles[0]]['chance'])}. "
            f"Best probe accuracy on held-out retain facts (does the probe work?): {sanity}.\n\n"
            + table(["layer"] + [f"{ROLE_NAMES[r]} probe / lens" for r in roles], rows) + "\n![probes](probe.png)\n")


def _capacity(folder: Path, probe: dict, roles: list[str]) -> str:
    series = {ROLE_NAMES[r]: ([c["step"] for c in probe[r]["curve"]], [c["new"]["acc"] for c in probe[r]["curve"]])
              for r in roles}
    plots.lines(folder / "capacity.png", series, xlabel="fine-tuning steps", ylabel="accuracy on the new facts",
                title="Capacity: learning new facts after unlearning",
                styles={ROLE_NAMES[r]: {"color": plots.MODEL_COLOURS[r]} for r in roles})
    rows = [[ROLE_NAMES[r], probe[r]["steps_to_target"], probe[r]["final"]["acc"], probe[r]["final"]["nll"]]
            for r in roles]
    return ("\n## Capacity (learning new facts)\n\n"
            f"New facts from `{probe['data']}`; steps to reach accuracy {probe[roles[0]]['target']}:\n\n"
            + table(["model", "steps to target", "final acc", "final NLL"], rows) + "\n![capacity](capacity.png)\n")


def _adversarial(probe: dict, roles: list[str], title: str) -> str:
    rows = [[ROLE_NAMES[r], probe[r]["clean"], probe[r]["per_fact_success"], probe[r]["universal_heldout_success"]]
            for r in roles]
    return (f"\n## {title}\n\n{probe['facts']} forget facts attacked one by one (the answer's own tokens are "
            "not allowed in a GCG suffix), and one universal suffix fitted on half of them and applied to the "
            "other half. A success = the greedy answer is the forget answer. When the gold model is forced as "
            "often as M, the attack is measuring itself, not the unlearning.\n\n"
            + table(["model", "no attack", "per-fact success", "universal, held-out facts"], rows))
