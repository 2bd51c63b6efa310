r"""The paper's central claim: at equal per-layer densities, granularity does not matter.

For each --flops budget, PreCrop's plan for ResNet-20 on Fashion-MNIST gives a
per-layer density p_l (kept fraction of each kernel). Three arms share those
densities exactly:
    weight   random unstructured masks at p_l (TF-MOT fixed masks)
    filter   random channels at PreCrop's widths (`sparsity.channel_masks`): every
             channel group keeps a random subset of its channels, and a layer's input
             channels follow the previous layer's kept filters, so its live MACs equal
             the weight level's (p_l = c_in * c_out, as PreCrop's)
    precrop  PreCrop's own widths (a physically smaller model; p_l = c_in * c_out)
The arms' effective (live) MACs are therefore equal. The first version of the filter
arm, now "filter_independent" (`random_masks(..., granularity="filter")`, filters
drawn independently per layer), left most kept weights reading pruned channels: its
live MACs were 0.154 of dense at flops=0.25, not 0.25 (`sparsity.live_macs`). Its
archived 2-epoch runs regenerate the exploratory page with
`--granularities=weight,filter_independent --grids=`. Same data, model and recipe as
benchmarks/accuracy.py (the precrop and dense runs are shared with it, in the
same --out_dir). Also listed for context: synflow_random (random weights at
SynFlow's densities, from the accuracy grid) when present.

Writes benchmarks/results/granularity.{csv,md,png}. Resumable like
benchmarks/accuracy.py.

Usage (from the repository root):
    python -m benchmarks.granularity
    python -m benchmarks.granularity --flops=0.5,0.25
    python -m benchmarks.granularity --grids=          # only re-summarise finished runs
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np

from apps import compare
from benchmarks import accuracy
from benchmarks import stats

FLAGS = flags.FLAGS

flags.DEFINE_list("granularities", ["weight", "filter"], "Mask arms to compare: weight, filter "
                  "(channel masks at PreCrop's widths) or filter_independent (the first, flawed "
                  "filter arm: filters drawn per layer, so kept weights read pruned channels).")
flags.DEFINE_bool("shared_runs", True, "Also run the dense/precrop/synflow_random runs it shares "
                  "with benchmarks.accuracy (--noshared_runs while that script is running, so "
                  "the two never train the same run at once).")
FLAGS.set_default("flops", ["0.25"])
# Four seeds separate its arms beyond seed noise; its shared runs (dense, precrop, synflow_random) are the
# accuracy grid's first four.
FLAGS.set_default("seeds", 4)

ARMS = ("precrop", "weight", "filter", "filter_independent", "synflow_random")
# Run names per mask arm; the fixed filter arm has new names, so the archived runs of the first
# (independent-filter) version are never restored as its results.
_RUN_TAG = {"weight": "random_weight", "filter": "channel_filter",
            "filter_independent": "random_filter"}


def _model():
    """The dense model of the runs (a bundled CIFAR ResNet at --width)."""
    from tf_precrop import data  # pylint: disable=g-import-not-at-top  (TensorFlow when needed)
    from tf_precrop import models  # pylint: disable=g-import-not-at-top

    info = data.info(FLAGS.dataset)
    return getattr(models, FLAGS.models[0])(info.input_shape, info.num_classes, width=FLAGS.width)


def precrop_densities(model, budget):
    """PreCrop's per-kernel densities at a MACs budget: {"layer/kernel": p_l}."""
    import tf_precrop  # pylint: disable=g-import-not-at-top

    plan = tf_precrop.plan(model, flops=budget)
    return {f"{layer.name}/kernel": layer.density for layer in plan.layers
            if layer.density is not None}


def mask_runs():
    """The masked runs (writing their .npz masks once); PreCrop runs come from the accuracy grid."""
    from tf_precrop import sparsity  # pylint: disable=g-import-not-at-top

    import tf_precrop  # pylint: disable=g-import-not-at-top

    model = _model()
    runs = []
    for budget in (float(f) for f in FLAGS.flops):
        densities = precrop_densities(model, budget)
        for granularity in FLAGS.granularities:
            for seed in range(FLAGS.seeds):
                name = f"{FLAGS.models[0]}_{_RUN_TAG[granularity]}_f{budget:g}_s{seed}"
                path = os.path.join(FLAGS.out_dir, "masks", f"{name}.npz")
                if not os.path.exists(path):
                    if granularity == "filter":
                        masks = sparsity.channel_masks(
                            model, tf_precrop.plan(model, flops=budget), seed=seed)
                    else:
                        masks = sparsity.random_masks(model, densities, seed=seed, granularity=(
                            "filter" if granularity == "filter_independent" else granularity))
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    np.savez_compressed(path, **masks)
                runs.append({"model": FLAGS.models[0], "method": "masks", "flops": budget,
                             "seed": seed, "round_to": 1, "name": name, "masks": path,
                             "arm": granularity})
    return runs


def shared_runs():
    """precrop, synflow_random and dense runs of the accuracy grid (same names, same out_dir)."""
    flops = [float(f) for f in FLAGS.flops]
    runs = compare.grid(FLAGS.models, ["dense", "precrop", "synflow_random"], flops, FLAGS.seeds)
    return [{**r, "arm": r["method"]} for r in runs]


def plot(summary, path):
    """Bar chart: accuracy (mean ± std) per arm and budget, dense as a line."""
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    budgets = sorted({e["flops_budget"] for e in summary if e["flops_budget"] is not None},
                     reverse=True)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    width = 0.8 / len(ARMS)
    for i, arm in enumerate(ARMS):
        points = [next((e for e in summary if e["arm"] == arm and e["flops_budget"] == b), None)
                  for b in budgets]
        xs = [j + (i - (len(ARMS) - 1) / 2) * width for j, p in enumerate(points) if p]
        ax.bar(xs, [100 * p["test_accuracy_mean"] for p in points if p], width,
               yerr=[100 * p["test_accuracy_std"] for p in points if p], capsize=3, label=arm)
    dense = [e for e in summary if e["arm"] == "dense"]
    if dense:
        ax.axhline(100 * dense[0]["test_accuracy_mean"], color="0.3", linestyle="--",
                   label="dense")
    lows = [100 * (e["test_accuracy_mean"] - e["test_accuracy_std"]) for e in summary]
    ax.set_ylim(min(lows) - 2 if lows else 0, None)
    ax.set_xticks(range(len(budgets)), [f"FLOPs {b:g}" for b in budgets])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Same per-layer densities: weight vs filter vs PreCrop widths")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(runs):
    rows = compare.collect(runs, FLAGS.out_dir)
    arm_of = {r["name"]: r["arm"] for r in runs}
    for row in rows:
        row["method"] = row["arm"] = arm_of[row["run"]]
    summary = compare.summarize(rows)
    for entry in summary:
        entry["arm"] = entry["method"]
    return rows, summary


def _filter_arm():
    """The filter arm on the page: the fixed one unless only the first version was selected."""
    return "filter" if "filter" in FLAGS.granularities else "filter_independent"


def reading(rows):
    """One sentence per budget: does granularity matter beyond seed noise here?"""
    lines = []
    arm = _filter_arm()
    for budget in (float(f) for f in FLAGS.flops):
        weight = stats.accuracies(rows, "weight", budget)
        filt = stats.accuracies(rows, arm, budget)
        if len(weight) < 2 or len(filt) < 2:
            continue
        diff, _, p, _ = stats.welch(weight, filt)
        verdict = ("beyond seed noise: at these densities and this training length granularity "
                   "does change accuracy" if p < 0.05 else
                   "within seed noise: granularity makes no measurable difference here")
        if arm == "filter_independent":
            verdict += (" - but this filter arm's live MACs are lower than the weight arm's (its "
                        "kept weights mostly read pruned channels), so the gap overstates the cost "
                        "of filter granularity")
        lines.append(f"Reading (flops={budget:g}, n={len(weight)}/{len(filt)} seeds): weight-level "
                     f"minus {arm} random pruning at identical per-layer densities = "
                     f"{100 * diff:+.2f} pp (Welch p = {p:.3f}), {verdict}.")
    return lines


def live_lines(runs):
    """Live MACs (`sparsity.live_macs`: kept weights reading live channels) of each mask arm."""
    import tf_precrop  # pylint: disable=g-import-not-at-top
    from tf_precrop import sparsity  # pylint: disable=g-import-not-at-top

    model = _model()
    dense = tf_precrop.count(model).macs
    ratios = {}
    for run in runs:
        if run["method"] == "masks" and os.path.exists(run["masks"]):
            with np.load(run["masks"]) as f:
                masks = {key: f[key] for key in f.files}
            ratios.setdefault((run["arm"], run["flops"]), []).append(
                (sparsity.live_macs(model, masks) / dense, sparsity.masked_cost(model, masks)["macs_ratio"]))
    lines = [f"- {arm} at flops={budget:g}: live MACs ratio {np.mean([r[0] for r in v]):.3f} "
             f"(masked MACs ratio {np.mean([r[1] for r in v]):.3f}), mean over {len(v)} seeds' masks."
             for (arm, budget), v in sorted(ratios.items())]
    return ["Live MACs (kept weights that read a live channel, `tf_precrop.sparsity.live_macs`):", "",
            *lines, ""] if lines else []


def write(runs, rows, summary):
    os.makedirs(FLAGS.results_dir, exist_ok=True)
    compare.write_csv(os.path.join(FLAGS.results_dir, "granularity.csv"), summary)
    pairs = []
    arm = _filter_arm()
    for budget in (float(f) for f in FLAGS.flops):
        pairs += [(f"weight - {arm}", ("weight", budget, 1), (arm, budget, 1), budget),
                  ("precrop - weight", ("precrop", budget, 1), ("weight", budget, 1), budget),
                  (f"precrop - {arm}", ("precrop", budget, 1), (arm, budget, 1), budget),
                  ("weight - synflow_random", ("weight", budget, 1), ("synflow_random", budget, 1),
                   budget)]
    table = accuracy.exploratory(compare.markdown(
        summary, "Exploratory: granularity at equal per-layer densities (Fashion-MNIST, 2 epochs)"),
        seeds="3 -> 4")
    table = table.replace("| method |", "| arm |")
    names = {r["name"] for r in runs}
    missing = sorted(names - {r["run"] for r in rows})
    text = "\n".join([
        table,
        "Arms: weight = random weights at PreCrop's per-layer densities p_l "
        "(`tf_precrop.plan(model, flops=...)`'s `LayerPlan.density`, via "
        "`tf_precrop.sparsity.random_masks(..., granularity=\"weight\")`); filter = random channels at "
        "PreCrop's widths (`tf_precrop.sparsity.channel_masks`: a layer's input channels follow the "
        "previous layer's kept filters, live MACs equal to weight's); filter_independent = the first "
        "filter arm (`random_masks(..., granularity=\"filter\")`, filters drawn independently per "
        "layer: its kept weights mostly read pruned channels). All trained with "
        "TF-MOT fixed masks (dense shapes); precrop = PreCrop's widths (round_to=1), a physically "
        "smaller model; synflow_random = random weights at SynFlow's densities (other densities, for "
        "context).", "", *live_lines(runs),
        *accuracy.setup_lines(len(names), len(rows), "python -m benchmarks.accuracy && "
                              "python -m benchmarks.granularity"
                              + ("" if FLAGS.granularities == ["weight", "filter"] else
                                 f" --granularities={','.join(FLAGS.granularities)}")),
        "## Differences", "",
        *stats.comparison_table(rows, pairs), "", *reading(rows), "",
        "\"beyond seed noise\" = Welch p < 0.05 over the seeds; \"no\" means the arms are within "
        "seed noise of each other at this sample size.", ""])
    if missing:
        text += f"\nNot run (yet): {', '.join(missing)}\n"
    with open(os.path.join(FLAGS.results_dir, "granularity.md"), "w") as f:
        f.write(text)
    if summary:
        plot(summary, os.path.join(FLAGS.results_dir, "granularity.png"))


def main(argv):
    del argv
    runs = shared_runs() + mask_runs()
    accuracy.restore_runs(runs)
    if FLAGS.grids:
        accuracy.prepare_data()
        todo = [r for r in runs if FLAGS.shared_runs or r["method"] == "masks"]
        _, _, failed = compare.run_grid(sorted(todo, key=lambda r: r["seed"]), FLAGS.out_dir,
                                        FLAGS.jobs)
        if failed:
            print(f"granularity: failed runs: {', '.join(failed)}", file=sys.stderr)
    accuracy.archive_runs(runs)
    rows, summary = summarize(runs)
    write(runs, rows, summary)
    print(f"granularity: {len(rows)} of {len(runs)} runs finished; wrote "
          f"{FLAGS.results_dir}/granularity.md")


if __name__ == "__main__":
    app.run(main)
