"""Pitfall 1, adversarial suffixes: GCG and the embedding-space attack against every method's unlearned
model, the original and the gold model, same budget, 3 seeds (per-fact attacks on 8 forget facts and one
universal suffix fitted on 4 and tested on the other 4). The gold model is the baseline: a suffix that
makes the gold model "recall" a fact it never saw measures the attack. Models shared with the other
pitfall-1 experiments (OUT/models). Writes OUT/gcg.json, prints a table.
"""


from experiments.common import audit_unlearned, lr_grid, mean_std, pitfall1_setup, write_json

METHODS = "ga,npo,simnpo,rmu"


def main():
    args, world, base, gold, methods, seeds = pitfall1_setup(__doc__)
    if args.methods == ",".join(("ga", "graddiff", "npo", "simnpo", "rmu")):
        methods = METHODS.split(",")
    rows = []
    for method, lr, seed in lr_grid(methods, (1.0,), seeds):
        for probe in ("gcg", "embed"):
            result = audit_unlearned(args, world, base, gold, method, seed, lr, probe)["probes"][probe]
            rows.append({"method": method, "seed": seed, "attack": probe, "verdict": result["verdict"],
                         **{role: {k: result[role][k] for k in ("clean", "per_fact_success",
                                                                "universal_heldout_success")}
                            for role in ("model", "original", "retrained")}})
            print(rows[-1], flush=True)
    table = []
    for method in methods:
        for attack in ("gcg", "embed"):
            group = [r for r in rows if r["method"] == method and r["attack"] == attack]
            table.append({"method": method, "attack": attack,
                          **{f"{role}_{k}": mean_std([r[role][k] for r in group])
                             for role in ("model", "retrained") for k in ("clean", "per_fact_success",
                                                                           "universal_heldout_success")},
                          "verdicts": sorted({r["verdict"] for r in group})})
    write_json(args.out / "gcg.json", {"runs": rows, "table": table})
    print(f"{'method':<8}{'attack':<7}{'M clean':>9}{'M per-fact':>12}{'M universal':>13}{'gold per-fact':>15}"
          f"{'gold universal':>16}  verdicts")
    for r in table:
        print(f"{r['method']:<8}{r['attack']:<7}{r['model_clean'][0]:>9.3f}{r['model_per_fact_success'][0]:>12.3f}"
              f"{r['model_universal_heldout_success'][0]:>13.3f}{r['retrained_per_fact_success'][0]:>15.3f}"
              f"{r['retrained_universal_heldout_success'][0]:>16.3f}  {','.join(r['verdicts'])}")


if __name__ == "__main__":
    main()
