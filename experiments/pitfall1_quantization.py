"""Pitfall 1, quantization: does int8/int4 weight quantization bring forgotten facts back?

Zhang et al. (2024) report that GA/NPO-unlearned 7B models keep 21 % of the forget knowledge at full
precision but 83 % after 4-bit quantization: the unlearning updates are smaller than half a quantization
bucket, so quantizing the unlearned model lands on the original model's codes. Here: every method at
several learning rates (multiples of its default), AdamW and, for GradDiff and NPO, plain SGD without
clipping (whose updates follow the gradient's size instead of Adam's per-weight normalisation; GA under
SGD jumps from no forgetting at lr 0.03 to a collapsed model at 0.1, so it is left out), 3 seeds, on the tiny world; for
each run the forget accuracy before/after quantization and the share of quantized codes that differ
from the original model's (the data-free predictor). Writes OUT/quantization.{json,png}, prints a table.
"""

import matplotlib.pyplot as plt

from experiments.common import audit_unlearned, default_lr, mean_std, pitfall1_setup, write_json

LR_SCALES = (0.1, 0.3, 1.0)
SGD_LRS = (0.01, 0.03)
SCHEMES = "int8,int4,int4-g32"


def main():
    args, world, base, gold, methods, seeds = pitfall1_setup(__doc__)
    settings = [(m, "adamw", default_lr(m) * scale) for m in methods for scale in LR_SCALES]
    settings += [(m, "sgd", lr) for m in ("graddiff", "npo") if m in methods for lr in SGD_LRS]
    rows = []
    for method, optimizer, lr in settings:
        for seed in seeds:
            result = audit_unlearned(args, world, base, gold, method, seed, lr, "quant", optimizer,
                                     quant_schemes=SCHEMES)
            quant = result["probes"]["quant"]
            row = {"method": method, "optimizer": optimizer, "lr": lr, "seed": seed, "verdict": quant["verdict"],
                   "clean": quant["model"]["clean"]["forget"]["acc"],
                   "retain": quant["model"]["clean"]["retain"]["acc"]}
            for scheme in SCHEMES.split(","):
                row[scheme] = quant["model"][scheme]["forget"]["acc"]
                row[f"{scheme}_changed"] = quant["changed_codes_vs_original"][scheme]["all"]
            rows.append(row)
            print(row, flush=True)
    table = []
    for method, optimizer, lr in settings:
        group = [r for r in rows if (r["method"], r["optimizer"], r["lr"]) == (method, optimizer, lr)]
        entry = {"method": method, "optimizer": optimizer, "lr": lr,
                 "verdicts": sorted({r["verdict"] for r in group})}
        for key in ("clean", "retain", *SCHEMES.split(","), *(f"{s}_changed" for s in SCHEMES.split(","))):
            entry[key], entry[key + "_std"] = mean_std([r[key] for r in group])
        table.append(entry)
    original = result["probes"]["quant"]["original"]
    baseline = {"original_clean": original["clean"]["forget"]["acc"],
                "original_int4": original["int4"]["forget"]["acc"],
                "gold_clean": result["probes"]["quant"]["retrained"]["clean"]["forget"]["acc"]}
    plot(table, args.out / "quantization.png")
    write_json(args.out / "quantization.json", {"runs": rows, "table": table, "baselines": baseline})
    print(f"original forget acc {baseline['original_clean']:.3f} (int4 {baseline['original_int4']:.3f}); "
          f"gold {baseline['gold_clean']:.3f}")
    print(f"{'method':<9}{'opt':<6}{'lr':>8}{'forget':>8}{'int8':>7}{'int4':>7}{'int4-g32':>9}{'retain':>8}"
          f"{'int8 chg':>9}{'int4 chg':>9}  verdicts")
    for r in table:
        print(f"{r['method']:<9}{r['optimizer']:<6}{r['lr']:>8.0e}{r['clean']:>8.3f}{r['int8']:>7.3f}{r['int4']:>7.3f}"
              f"{r['int4-g32']:>9.3f}{r['retain']:>8.3f}{r['int8_changed']:>9.3f}{r['int4_changed']:>9.3f}  "
              f"{','.join(r['verdicts'])}")


def plot(table, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in table:
        label = f"{r['method']} {r['optimizer']} {r['lr']:.0e}"
        axes[0].scatter(r["int4_changed"], r["int4"] - r["clean"], label=label, s=25)
        axes[1].scatter(r["clean"], r["int4"], s=25)
    axes[0].set(xlabel="share of int4 codes changed vs the original", ylabel="forget acc gained by int4",
                title="Quantization recovery vs changed codes")
    axes[1].plot([0, 1], [0, 1], "k--", lw=0.5)
    axes[1].set(xlabel="forget acc (full precision)", ylabel="forget acc (int4)", title="Before vs after int4")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)



if __name__ == "__main__":
    main()
