r"""Fashion-MNIST accuracy and training step time: PreCrop vs SynFlow vs baselines, and PreConfig.

Real Fashion-MNIST (prepared offline through tfds from the Debian files when
needed), a CIFAR-style ResNet-20 adapted to 28x28x1, every run a child
`apps.train` process through `apps.compare` (same recipe for every method).

Grids (all in --out_dir, resumable: finished runs are skipped; runs are
ordered seed by seed, so an interrupted grid leaves whole seeds):
    main      dense, precrop, synflow, synflow_random (random at SynFlow's
              per-layer densities), uniform_width at each --flops (round_to=1), --seeds
              seeds (8: at 4 the gaps between pruning methods were within seed noise)
    round8    precrop with round_to=8 at --round8_flops (aligned widths, for the step-time
              claim; at width 8, flops=0.25 is infeasible with round_to=8), --side_seeds seeds
    preconfig preconfig at flops=1.0 (max_ratio --max_ratio) vs dense, --side_seeds seeds

Writes benchmarks/results/accuracy.{csv,md,png}, accuracy_step_time.{json,png} (the
interleaved step-time measurement, grid "timing") and
benchmarks/results/preconfig_accuracy.{csv,md,png}.

Usage (from the repository root):
    python -m benchmarks.accuracy                      # the committed configuration
    python -m benchmarks.accuracy --grids=             # only re-summarise finished runs
    python -m benchmarks.accuracy --grids=main         # only the PreCrop vs baselines grid

Finished runs are archived in benchmarks/results/accuracy_runs/ (their results.json,
committed) and restored before a grid runs, so a grid resumes across sessions and
machines even though the run directories are git-ignored.
"""

import json
import os
import sys

from absl import app
from absl import flags
import numpy as np

from apps import compare
from benchmarks import runs as runs_lib
from benchmarks.stats import accuracies
from benchmarks.stats import comparison_table
from benchmarks.stats import describe
from benchmarks.stats import multiple_comparisons_line

FLAGS = flags.FLAGS

flags.DEFINE_list("grids", ["main", "round8", "preconfig", "timing"],
                  "Grids to run (empty: summarise only); timing = the interleaved step-time "
                  "measurement.")
flags.DEFINE_list("round8_flops", ["0.5"], "Budgets of the round_to=8 PreCrop runs. (At width 8 "
                  "a group cannot go below 8 channels with round_to=8, so ResNet-20 keeps at "
                  "least 0.466 of its MACs: flops=0.25 is infeasible there.)")
flags.DEFINE_integer("side_seeds", 4, "Seeds of the round8 and preconfig grids (side questions; "
                     "--seeds is the main grid's).")
flags.DEFINE_integer("timing_rounds", 5, "Rounds of the interleaved step-time measurement.")
flags.DEFINE_integer("timing_steps", 10, "Timed training steps per model and round.")
flags.DEFINE_string("results_dir", "benchmarks/results", "Where the summaries go.")
flags.DEFINE_string("archive_dir", "benchmarks/results/accuracy_runs",
                    "Committed copy of every finished run's results.json (<run>.json): restored into "
                    "--out_dir before a grid runs, so the grid resumes on another machine or session.")

# The committed configuration: 2.5-4 min per run (2 epochs of 60,000 images) on a shared 2-core VM.
for _name, _value in {
        "models": ["resnet20"], "width": 8, "dataset": "fashion_mnist",
        "methods": ["dense", "precrop", "synflow", "synflow_random", "uniform_width"],
        "flops": ["0.5", "0.25", "0.1"], "seeds": 8, "epochs": 2, "train_take": None,
        "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "schedule": "cosine",
        "out_dir": "benchmarks/work/accuracy", "data_dir": "benchmarks/work/tfds",
        "train_flags": ["--validation_freq=0"]}.items():
    FLAGS.set_default(_name, _value)


def grids():
    """All runs of the selected grids, seed by seed (dense runs are shared)."""
    flops = [float(f) for f in FLAGS.flops]
    selected = {
        "main": compare.grid(FLAGS.models, FLAGS.methods, flops, FLAGS.seeds),
        "round8": compare.grid(FLAGS.models, ["precrop"], [float(f) for f in FLAGS.round8_flops],
                               FLAGS.side_seeds, round_to=8),
        "preconfig": compare.grid(FLAGS.models, ["dense", "preconfig"], [1.0], FLAGS.side_seeds),
    }
    runs = {}
    for name in ("main", "round8", "preconfig"):
        for run in selected[name]:
            runs.setdefault(run["name"], {**run, "grid": name})
    return sorted(runs.values(), key=lambda r: r["seed"])


def _run_result(run):
    return _result_path(run["name"])


def _result_path(name):
    return os.path.join(FLAGS.out_dir, "runs", name, "results.json")


# Flags a run's result depends on besides its name (model, method, budget, seed): an archived run made with
# other values is not restored.
_RECIPE = ("dataset", "epochs", "train_take", "width", "batch_size", "lr", "weight_decay", "schedule")


def restore_runs(runs):
    """Puts archived results of ``runs`` into --out_dir (compare then skips them); returns how many."""
    return runs_lib.restore_runs([r["name"] for r in runs], FLAGS.archive_dir, _result_path,
                                 {k: getattr(FLAGS, k) for k in _RECIPE})


def archive_runs(runs):
    """Copies every finished run's results.json into --archive_dir (small, committed)."""
    runs_lib.archive_runs([r["name"] for r in runs], FLAGS.archive_dir, _result_path)


def prepare_data():
    """Prepares Fashion-MNIST once, before the children would race to do it."""
    runs_lib.prepare_fashion_mnist(FLAGS.data_dir)


def _train_images():
    """How much of the 60,000 training images the runs use, in words."""
    if FLAGS.train_take is None:
        return "all 60,000 training images"
    return f"the first {FLAGS.train_take} training images"


def setup_lines(total, finished, command="python -m benchmarks.accuracy", seeds=None):
    """The setup section of a results page (data, model, recipe, methods, runs, command).

    ``seeds``: the seeds in words, when not simply 0..--seeds-1.
    """
    return [
        "## Setup", "",
        f"- Data: real Fashion-MNIST through tfds (prepared offline from the Debian package "
        f"`dataset-fashion-mnist`), {_train_images()}, all 10,000 test "
        f"images; augmentation: zero-pad 2, random 28x28 crop, horizontal flip.",
        f"- Model: CIFAR-style ResNet-20 (3 stages x 3 basic blocks, BN) on 28x28x1, "
        f"width {FLAGS.width} (stages {FLAGS.width}/{2 * FLAGS.width}/{4 * FLAGS.width}).",
        f"- Training (every method the same, `apps.train`): {FLAGS.epochs} epochs, batch "
        f"{FLAGS.batch_size}, SGD momentum 0.9 Nesterov, lr {FLAGS.lr} {FLAGS.schedule}, "
        f"decoupled weight decay {FLAGS.weight_decay}; "
        f"{seeds or f'seeds 0..{FLAGS.seeds - 1}'}.",
        "- Methods: dense; precrop (tf_precrop.crop, round_to=1, and round_to=8 as \"precrop r8\"); "
        "synflow (100 iterations, TF-MOT fixed masks); synflow_random (random weights at SynFlow's "
        "per-layer densities); uniform_width (one shared width ratio, same budget).",
        "- MACs ratio: effective MACs / dense MACs; masked methods execute the dense MACs "
        "(TF-MOT masks keep the shapes), so their step time is the dense model's plus the mask cost.",
        "- Step time: mean wall time of a training batch (first batch excluded), measured in the "
        "same runs, on a 2-core VM shared with other jobs: relative numbers are indicative.",
        f"- Runs finished: {finished} of {total}.",
        f"- Command: `{command}` (resumable; run dirs in {FLAGS.out_dir}).", ""]


def _timing():
    path = os.path.join(FLAGS.results_dir, "accuracy_step_time.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def exploratory(page, seeds="3 -> 4 -> 8; flops=0.1 added later and reported at 5 seeds"):
    """``page`` (Markdown starting with its "# title" line) with the exploratory note under the title.

    ``seeds``: how the seed count grew, in words.
    """
    title, rest = page.split("\n", 1)
    note = ("> **Exploratory, not confirmatory.** 2 epochs, no validation split (recipe and seed decisions "
            f"were made looking at the test set), seeds added after looking ({seeds}), no correction for "
            "the number of tests chosen in advance. Read these numbers as hypotheses. The pre-registered "
            "experiment of issue 13 (`benchmarks/confirmatory.py`, benchmarks/PREREGISTRATION*.md) tests "
            "them.")
    return f"{title}\n\n{note}\n{rest}"


def reading_lines(rows, summary):
    """The headline (PreCrop vs SynFlow per budget), and where uniform width leaves budget unused."""
    lines = []
    for budget in (float(f) for f in FLAGS.flops):
        a, b = accuracies(rows, "precrop", budget), accuracies(rows, "synflow", budget)
        if a and b:
            lines.append(f"- {describe(f'PreCrop - SynFlow at flops={budget:g}', a, b)}")
    for entry in summary:
        budget = entry["flops_budget"]
        if entry["method"] == "uniform_width" and entry["macs_ratio_mean"] < 0.95 * budget:
            lines.append(
                f"- uniform_width at flops={budget:g} uses {entry['macs_ratio_mean']:.3f} of the dense "
                f"MACs: the largest shared ratio whose widths, rounded to whole channels at width "
                f"{FLAGS.width}, fit the budget; its accuracy comes at a lower cost than the others'.")
    return ["## Reading", "", *lines, ""] if lines else []


def write_accuracy(runs, rows):
    names = {r["name"] for r in runs if r["grid"] in ("main", "round8")}
    main_rows = [r for r in rows if r["run"] in names]
    summary = compare.summarize(main_rows)
    os.makedirs(FLAGS.results_dir, exist_ok=True)
    compare.write_csv(os.path.join(FLAGS.results_dir, "accuracy.csv"), summary)
    pairs = []
    for budget in (float(f) for f in FLAGS.flops):
        pc = ("precrop", budget, 1)
        pairs += [(f"precrop - {m}", pc, (m, budget, 1), budget)
                  for m in ("synflow", "synflow_random", "uniform_width")]
        pairs += [(f"{m} - dense", (m, budget, 1), ("dense", None, 1), budget)
                  for m in ("precrop", "synflow", "synflow_random", "uniform_width")]
        # The literature's control: do SynFlow's weights matter, or only its per-layer densities?
        pairs.append(("synflow_random - synflow", ("synflow_random", budget, 1),
                      ("synflow", budget, 1), budget))
        if f"{budget:g}" in FLAGS.round8_flops:
            pairs.append(("precrop r8 - precrop", ("precrop", budget, 8), pc, budget))
    table = exploratory(compare.markdown(
        summary, "Exploratory: Fashion-MNIST accuracy: PreCrop vs SynFlow and baselines (2 epochs)"))
    finished = len(main_rows)
    stds = [100 * e["test_accuracy_std"] for e in summary if e["n"] > 1]
    noise = ([] if not stds else [
        f"Seed noise: the sample standard deviation of test accuracy over seeds is {min(stds):.2f}-"
        f"{max(stds):.2f} pp (median {float(np.median(stds)):.2f} pp) across the {len(stds)} configurations.",
        ""])
    text = "\n".join([table, *setup_lines(len(names), finished, seeds=(
                          f"seeds 0..{FLAGS.seeds - 1} (precrop r8: 0..{FLAGS.side_seeds - 1})")),
                      *reading_lines(main_rows, summary), "## Differences", "", *noise,
                      *comparison_table(main_rows, pairs), "",
                      *multiple_comparisons_line(main_rows, pairs),
                      "Differences are mean(A) - mean(B) in percentage points; SE combines "
                      "both sample standard deviations (Welch); the 95% interval uses Welch's "
                      "degrees of freedom.", "",
                      "## Training step time, interleaved measurement", "",
                      *timing_lines(_timing())])
    missing = sorted(names - {r["run"] for r in main_rows})
    if missing:
        text += f"\nNot run (yet): {', '.join(missing)}\n"
    with open(os.path.join(FLAGS.results_dir, "accuracy.md"), "w") as f:
        f.write(text)
    if summary:
        compare.plot(summary, os.path.join(FLAGS.results_dir, "accuracy.png"), "test_accuracy",
                     "test accuracy (%)", 100)
    timing = _timing()
    if timing:
        plot_timing(timing, os.path.join(FLAGS.results_dir, "accuracy_step_time.png"))


def plot_timing(timing, path):
    """Bar chart of the interleaved median step times relative to dense."""
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    names = list(timing)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.barh(names, [timing[n]["rel_dense"] for n in names],
            color=["C2" if n.startswith(("precrop", "uniform")) else "C3" if "TF-MOT" in n or
                   n.startswith("synflow") else "0.5" for n in names])
    ax.axvline(1.0, color="0.3", linestyle="--")
    ax.invert_yaxis()
    ax.set_xlabel("median training step time / dense (interleaved, batch "
                  f"{FLAGS.batch_size})")
    ax.set_title("Step time: resized models (green) vs masked (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_preconfig(runs, rows):
    # Dense at the preconfig grid's own seeds (the main grid has more), so the page is one design.
    names = {r["name"] for r in runs if r["grid"] == "preconfig" or
             (r["method"] == "dense" and r["seed"] < FLAGS.side_seeds)}
    pc_rows = [r for r in rows if r["run"] in names]
    if not any(r["method"] == "preconfig" for r in pc_rows):
        print("accuracy: no finished preconfig run in --out_dir; preconfig_accuracy.* left as they are")
        return
    summary = compare.summarize(pc_rows)
    compare.write_csv(os.path.join(FLAGS.results_dir, "preconfig_accuracy.csv"), summary)
    table = compare.markdown(summary, "Fashion-MNIST accuracy: PreConfig vs dense at equal FLOPs")
    text = "\n".join([
        table,
        f"PreConfig: `tf_precrop.preconfig(model, flops=1.0, max_ratio={FLAGS.max_ratio})` "
        "(widths redistributed at the dense MACs, groups may grow up to max_ratio), trained "
        "from scratch with the dense model's recipe.", "",
        *setup_lines(len(names), len(pc_rows), seeds=f"seeds 0..{FLAGS.side_seeds - 1}"), "## Difference", "",
        *comparison_table(pc_rows, [("preconfig - dense", ("preconfig", 1.0, 1),
                                     ("dense", None, 1), 1.0)]), ""])
    with open(os.path.join(FLAGS.results_dir, "preconfig_accuracy.md"), "w") as f:
        f.write(text)
    if summary:
        compare.plot(summary, os.path.join(FLAGS.results_dir, "preconfig_accuracy.png"),
                     "test_accuracy", "test accuracy (%)", 100)


def timing_models():
    """The models whose step time is compared: name -> a function running one training step."""
    import tf_precrop  # pylint: disable=g-import-not-at-top  (TensorFlow only when needed)
    from tf_precrop import data  # pylint: disable=g-import-not-at-top
    from tf_precrop import models  # pylint: disable=g-import-not-at-top
    from tf_precrop import sparsity  # pylint: disable=g-import-not-at-top

    info = data.info(FLAGS.dataset)
    dense = getattr(models, FLAGS.models[0])(info.input_shape, info.num_classes, width=FLAGS.width)
    arms = {"dense": dense}
    masks = None
    for budget in (float(f) for f in FLAGS.flops):
        arms[f"precrop f{budget:g}"] = tf_precrop.crop(dense, flops=budget, seed=0)
        if f"{budget:g}" in FLAGS.round8_flops:
            arms[f"precrop r8 f{budget:g}"] = tf_precrop.crop(dense, flops=budget, round_to=8,
                                                              seed=0)
        arms[f"uniform_width f{budget:g}"] = tf_precrop.crop(dense, flops=budget, uniform=True,
                                                             seed=0)
        masks = sparsity.compute_masks("synflow", dense, flops=budget, seed=0)
        arms[f"synflow f{budget:g}"] = sparsity.to_tfmot(dense, masks)
    # Control: the dense model in the masked framework (tf_keras + TF-MOT wrappers, all-ones masks).
    arms["dense (TF-MOT, all-ones masks)"] = sparsity.to_tfmot(
        dense, {key: np.ones_like(mask) for key, mask in masks.items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((FLAGS.batch_size, *info.input_shape)).astype("float32")
    y = rng.integers(0, info.num_classes, FLAGS.batch_size)
    return {name: _stepper(model, name.startswith(("synflow", "dense (TF-MOT")), x, y, sparsity)
            for name, model in arms.items()}


def _stepper(model, pruned, x, y, sparsity):
    """A function running one SGD step; TF-MOT models get their pruning-step callback."""
    model.compile(optimizer="sgd")  # SGD of the model's own framework, as apps.train does
    model.compile(optimizer=type(model.optimizer)(learning_rate=0.01, momentum=0.9, nesterov=True),
                  loss="sparse_categorical_crossentropy")
    callbacks = list(sparsity.callbacks()) if pruned else []
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    steps = iter(range(10**9))

    def step():
        batch = next(steps)
        for callback in callbacks:
            callback.on_train_batch_begin(batch)
        model.train_on_batch(x, y)

    return step


def measure_step_times():
    """Interleaved step times: the models take turns, so load changes hit all alike.

    Returns:
        {arm: {"median_ms", "mean_ms", "steps", "rel_dense"}}.
    """
    import time  # pylint: disable=g-import-not-at-top

    steppers = timing_models()
    times = {name: [] for name in steppers}
    for step in steppers.values():  # tracing and warm-up
        for _ in range(3):
            step()
    for _ in range(FLAGS.timing_rounds):
        for name, step in steppers.items():
            for _ in range(FLAGS.timing_steps):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    dense = float(np.median(times["dense"]))
    return {name: {"median_ms": 1e3 * float(np.median(t)), "mean_ms": 1e3 * float(np.mean(t)),
                   "steps": len(t), "rel_dense": float(np.median(t)) / dense}
            for name, t in times.items()}


def timing_lines(timing):
    if not timing:
        return ["Not measured yet (`python -m benchmarks.accuracy --grids=timing`).", ""]
    lines = ["| model | median step ms | mean step ms | steps | median vs dense |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {t['median_ms']:.1f} | {t['mean_ms']:.1f} | {t['steps']} | "
              f"{t['rel_dense']:.2f}x |" for name, t in timing.items()]
    return lines + [
        "", f"`train_on_batch` on one batch of {FLAGS.batch_size} (28x28x1), models taking turns: "
        f"{FLAGS.timing_rounds} rounds x {FLAGS.timing_steps} steps each after 3 warm-up steps, "
        "in one process, so a load change on the shared VM hits every model alike. synflow is the "
        "TF-MOT masked model (dense shapes plus the mask multiply); \"dense (TF-MOT, all-ones "
        "masks)\" is the same machinery without pruning, the fair baseline for the masked "
        "methods (it separates the framework's cost from the masks').", ""]


def main(argv):
    del argv
    runs = grids()
    restore_runs(runs)
    todo = [r for r in runs if r["grid"] in FLAGS.grids]
    if todo:
        prepare_data()
        _, _, failed = compare.run_grid(todo, FLAGS.out_dir, FLAGS.jobs)
        if failed:
            print(f"accuracy: failed runs: {', '.join(failed)}", file=sys.stderr)
    timing_path = os.path.join(FLAGS.results_dir, "accuracy_step_time.json")
    if "timing" in FLAGS.grids:
        os.makedirs(FLAGS.results_dir, exist_ok=True)
        with open(timing_path, "w") as f:
            json.dump(measure_step_times(), f, indent=2)
    archive_runs(runs)
    rows = compare.collect(runs, FLAGS.out_dir)
    write_accuracy(runs, rows)
    write_preconfig(runs, rows)
    print(f"accuracy: {len(rows)} of {len(runs)} runs finished; wrote "
          f"{FLAGS.results_dir}/accuracy.md and preconfig_accuracy.md")


if __name__ == "__main__":
    app.run(main)
