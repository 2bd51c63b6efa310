r"""Runs a grid of `apps.train` runs and summarises it: CSV, Markdown, PNG plots.

Usage:
    python -m apps.compare --models=resnet20 --methods=dense,precrop,synflow \
        --flops=0.75,0.5,0.25,0.1 --seeds=3 --dataset=fashion_mnist --epochs=10 \
        --out_dir=runs/compare

Every run is its own child process (`python -m apps.train`), started with an
environment without TF_USE_LEGACY_KERAS (importing TF-MOT sets it, and a child
inheriting it would get tf_keras as `tf.keras`). The grid is resumable: a run
whose `results.json` exists is skipped, so an interrupted grid continues where
it stopped. Dense runs once per model and seed (its cost has no budget).

Writes to --out_dir: runs/<run>/ (one `apps.train` model_dir each, with
train.log), runs.csv (one row per run), summary.csv and summary.md (mean and
sample standard deviation over seeds), accuracy_vs_flops.png and
step_time_vs_flops.png.

This module defines its own flags (--flops is a list here) and does not import
TensorFlow; do not import it in a process that imports `apps.train`.
"""

import concurrent.futures
import csv
import json
import math
import os
import statistics
import subprocess
import sys

from absl import app
from absl import flags

import apps

FLAGS = flags.FLAGS

flags.DEFINE_list("models", ["resnet20"], "Model names (see apps.train --model).")
flags.DEFINE_list("methods", ["dense", "precrop", "synflow"], "apps.train methods.")
flags.DEFINE_list("flops", ["0.75", "0.5", "0.25", "0.1"], "MACs budgets (ratios of dense).")
flags.DEFINE_integer("seeds", 3, "Number of seeds per grid point (seeds 0..N-1).", lower_bound=1)
flags.DEFINE_string("out_dir", "runs/compare", "Output directory.")
flags.DEFINE_string("dataset", "fashion_mnist", "tfds dataset (see apps.train --dataset).")
flags.DEFINE_integer("epochs", 10, "Training epochs per run.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_float("lr", 0.1, "Initial learning rate.")
flags.DEFINE_string("schedule", "cosine", "Learning-rate schedule: cosine or step.")
flags.DEFINE_float("weight_decay", 5e-4, "Decoupled weight decay.")
flags.DEFINE_integer("width", None, "First-stage filters of bundled CIFAR ResNets.")
flags.DEFINE_integer("round_to", 1, "Width multiple for the structured methods.")
flags.DEFINE_float("max_ratio", 2.0, "preconfig's largest growth ratio.")
flags.DEFINE_integer("train_take", None, "Training examples per run (default: all).")
flags.DEFINE_integer("test_take", None, "Test examples per run (default: all).")
flags.DEFINE_string("data_dir", None, "tfds data directory.")
flags.DEFINE_list("train_flags", [], "Extra apps.train flags for every run, e.g. "
                  "--train_flags=--validation_freq=0,--lr=0.05.")
flags.DEFINE_integer("jobs", 1, "Runs in parallel (each uses all cores; 1 keeps step times "
                     "comparable).", lower_bound=1)

flags.register_validator(
    "methods", lambda v: set(v) <= set(apps.METHODS) - {"masks"},
    message=f"--methods must be a comma-separated list of: "
            f"{', '.join(m for m in apps.METHODS if m != 'masks')}")
flags.register_validator(
    "flops", lambda v: all(_is_ratio(s) for s in v),
    message="--flops must be a comma-separated list of ratios in (0, 1], e.g. 0.5,0.25")

TRAIN_COMMAND = (sys.executable, "-m", "apps.train")
"""How a child run is started; the run's flags are appended."""

_COLUMNS = ["model", "method", "flops_budget", "round_to", "seed", "test_accuracy", "macs_ratio",
            "params_ratio", "macs", "params", "executed_macs", "executed_params",
            "step_time_mean_s", "train_seconds", "run"]


def _is_ratio(text):
    try:
        return 0 < float(text) <= 1
    except ValueError:
        return False


def grid(models, methods, flops, seeds, round_to=1):
    """Expands the grid into runs.

    Args:
        models: model names.
        methods: method names; "dense" runs once per model and seed.
        flops: budgets (floats).
        seeds: number of seeds.
        round_to: width multiple of the structured methods; a value other than 1
            is part of their run names ("_r8"), so grids with different
            `round_to` can share one output directory (and its dense runs).

    Returns:
        List of dicts with keys model, method, flops (None for dense), seed,
        round_to and name (the run directory's name).

    Example:
        >>> [r["name"] for r in grid(["resnet20"], ["dense", "precrop"], [0.5], 1, round_to=8)]
        ['resnet20_dense_s0', 'resnet20_precrop_f0.5_r8_s0']
    """
    runs = []
    for model in models:
        for method in methods:
            for budget in ([None] if method == "dense" else flops):
                for seed in range(seeds):
                    tag = "" if budget is None else f"_f{budget:g}"
                    rounds = method in apps.STRUCTURED_METHODS and method != "dense"
                    if rounds and round_to != 1:
                        tag += f"_r{round_to}"
                    runs.append({"model": model, "method": method, "flops": budget, "seed": seed,
                                 "round_to": round_to if rounds else 1,
                                 "name": f"{model}_{method}{tag}_s{seed}"})
    return runs


def child_env():
    """The environment of a child run: ours without TF_USE_LEGACY_KERAS."""
    return {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}


def train_args(run, model_dir):
    """`apps.train` flags of one run (the grid point plus the shared flags).

    A run dict may also carry "masks" (an .npz path, for --method=masks).
    """
    args = [f"--model={run['model']}", f"--method={run['method']}", f"--seed={run['seed']}",
            f"--model_dir={model_dir}", f"--dataset={FLAGS.dataset}", f"--epochs={FLAGS.epochs}",
            f"--batch_size={FLAGS.batch_size}", f"--lr={FLAGS.lr}", f"--schedule={FLAGS.schedule}",
            f"--weight_decay={FLAGS.weight_decay}", f"--round_to={run['round_to']}",
            f"--max_ratio={FLAGS.max_ratio}", "--verbose=2"]
    if run["flops"] is not None:
        args.append(f"--flops={run['flops']}")
    if "masks" in run:
        args.append(f"--masks={run['masks']}")
    for name in ("width", "train_take", "test_take", "data_dir"):
        if FLAGS[name].value is not None:
            args.append(f"--{name}={FLAGS[name].value}")
    return args + list(FLAGS.train_flags)


def _run_child(run, model_dir):
    """Runs one grid point in a child process; returns (run, exit code)."""
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "train.log"), "w") as log:
        code = subprocess.call([*TRAIN_COMMAND, *train_args(run, model_dir)], env=child_env(),
                               stdout=log, stderr=subprocess.STDOUT)
    print(f"  {run['name']}: {'done' if code == 0 else f'FAILED (exit {code})'}", flush=True)
    return run, code


def run_grid(runs, out_dir, jobs=1):
    """Runs every unfinished run; returns (started, skipped, failed) run names.

    Args:
        runs: output of `grid`.
        out_dir: directory holding runs/<name>/.
        jobs: runs in parallel.

    Returns:
        Three lists of run names.
    """
    todo, skipped = [], []
    for run in runs:
        model_dir = os.path.join(out_dir, "runs", run["name"])
        finished = os.path.exists(os.path.join(model_dir, "results.json"))
        (skipped if finished else todo).append((run, model_dir))
    print(f"compare: {len(runs)} runs, {len(skipped)} finished before (skipped), "
          f"{len(todo)} to run", flush=True)
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(lambda item: _run_child(*item), todo))
    failed = [run["name"] for run, code in results if code != 0]
    return [run["name"] for run, _ in todo], [run["name"] for run, _ in skipped], failed


def collect(runs, out_dir):
    """Reads the results.json of every finished run of the grid into CSV rows."""
    rows = []
    for run in runs:
        path = os.path.join(out_dir, "runs", run["name"], "results.json")
        if os.path.exists(path):
            with open(path) as f:
                result = json.load(f)
            rows.append({**{k: result.get(k) for k in _COLUMNS}, "flops_budget": run["flops"],
                         "round_to": run["round_to"], "run": run["name"]})
    return rows


def summarize(rows):
    """Groups rows by (model, method, flops budget): mean and sample std over seeds.

    A method run with round_to != 1 is its own group, named e.g. "precrop r8".

    Args:
        rows: output of `collect`.

    Returns:
        List of dicts: model, method, flops_budget, n, and `<metric>_mean` /
        `<metric>_std` for test_accuracy, macs_ratio, params_ratio,
        step_time_mean_s, plus step_time_rel_dense (mean step time over the
        dense mean step time of the same model, None without dense runs).

    Example:
        >>> summarize(collect(grid(["resnet20"], ["dense"], [], 3), "runs/compare"))
    """
    groups = {}
    for row in rows:
        method = row["method"] if row["round_to"] == 1 else f"{row['method']} r{row['round_to']}"
        groups.setdefault((row["model"], method, row["flops_budget"]), []).append(row)
    summary = []
    for (model, method, budget), members in groups.items():
        entry = {"model": model, "method": method, "flops_budget": budget, "n": len(members)}
        for metric in ("test_accuracy", "macs_ratio", "params_ratio", "step_time_mean_s"):
            values = [m[metric] for m in members if m[metric] is not None]
            entry[f"{metric}_mean"] = statistics.fmean(values) if values else math.nan
            entry[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(entry)
    dense_time = {e["model"]: e["step_time_mean_s_mean"] for e in summary if e["method"] == "dense"}
    for entry in summary:
        base = dense_time.get(entry["model"])
        entry["step_time_rel_dense"] = entry["step_time_mean_s_mean"] / base if base else None
    summary.sort(key=lambda e: (e["model"], e["method"] != "dense", e["method"],
                                -(e["flops_budget"] or 1.0)))
    return summary


def write_csv(path, rows):
    """Writes dict rows to CSV (columns of the first row)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else _COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def markdown(summary, title):
    """Markdown table of a summary: accuracy mean ± std, cost ratios, step time.

    Args:
        summary: output of `summarize`.
        title: heading line.

    Returns:
        Markdown text.
    """
    lines = [f"# {title}", "",
             "| model | method | FLOPs budget | MACs ratio | params ratio | test accuracy "
             "(mean ± std) | n | step time ms | step time vs dense |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        budget = "-" if e["flops_budget"] is None else f"{e['flops_budget']:g}"
        rel = "-" if e["step_time_rel_dense"] is None else f"{e['step_time_rel_dense']:.2f}x"
        lines.append(
            f"| {e['model']} | {e['method']} | {budget} | {e['macs_ratio_mean']:.3f} | "
            f"{e['params_ratio_mean']:.3f} | {100 * e['test_accuracy_mean']:.2f} ± "
            f"{100 * e['test_accuracy_std']:.2f} | {e['n']} | "
            f"{1e3 * e['step_time_mean_s_mean']:.1f} ± {1e3 * e['step_time_mean_s_std']:.1f} | "
            f"{rel} |")
    lines += ["", "MACs ratio: achieved effective MACs / dense MACs (masked methods execute "
              "the dense MACs). std: sample standard deviation over seeds (0 when n = 1)."]
    return "\n".join(lines) + "\n"


def plot(summary, path, metric, ylabel, scale=1.0):
    """PNG of a metric (mean ± std over seeds) against the achieved MACs ratio.

    Args:
        summary: output of `summarize`.
        path: output PNG.
        metric: "test_accuracy" or "step_time_mean_s".
        ylabel: y-axis label.
        scale: factor applied to the metric (e.g. 100 for percent).
    """
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, ax = plt.subplots(figsize=(6, 4))
    for index, (model, method) in enumerate(sorted({(e["model"], e["method"]) for e in summary})):
        points = sorted((e for e in summary if (e["model"], e["method"]) == (model, method)),
                        key=lambda e: e["macs_ratio_mean"])
        x = [e["macs_ratio_mean"] for e in points]
        y = [scale * e[f"{metric}_mean"] for e in points]
        err = [scale * e[f"{metric}_std"] for e in points]
        if method == "dense":
            ax.axhline(y[0], color="0.4", linestyle="--", linewidth=1)
        ax.errorbar(x, y, yerr=err, marker="os^vDP*Xh<>"[index % 11], capsize=3,
                    label=method if len({e["model"] for e in summary}) == 1 else f"{model} {method}")
    ax.set_xscale("log")
    ax.set_xlabel("MACs / dense MACs (log)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(runs, out_dir, title):
    """Writes runs.csv, summary.csv, summary.md and the two plots; returns the summary."""
    rows = collect(runs, out_dir)
    summary = summarize(rows)
    write_csv(os.path.join(out_dir, "runs.csv"), rows)
    write_csv(os.path.join(out_dir, "summary.csv"), summary)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(markdown(summary, title))
    if summary:
        plot(summary, os.path.join(out_dir, "accuracy_vs_flops.png"), "test_accuracy",
             "test accuracy (%)", 100)
        plot(summary, os.path.join(out_dir, "step_time_vs_flops.png"), "step_time_mean_s",
             "training step time (ms)", 1e3)
    return summary


def main(argv):
    del argv
    runs = grid(FLAGS.models, FLAGS.methods, [float(f) for f in FLAGS.flops], FLAGS.seeds,
                FLAGS.round_to)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    started, skipped, failed = run_grid(runs, FLAGS.out_dir, FLAGS.jobs)
    write_outputs(runs, FLAGS.out_dir, f"{', '.join(FLAGS.models)} on {FLAGS.dataset}: "
                  f"{FLAGS.epochs} epochs, {FLAGS.seeds} seeds")
    print(f"compare: started {len(started)}, skipped {len(skipped)}, failed {len(failed)}; "
          f"wrote {os.path.join(FLAGS.out_dir, 'summary.md')}")
    if failed:
        sys.exit(f"compare: {len(failed)} run(s) failed, see their train.log: {', '.join(failed)}")


if __name__ == "__main__":
    app.run(main)
