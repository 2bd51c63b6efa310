r"""PreCrop over the whole keras.applications zoo: cost, achieved ratios, plan and crop time.

For every keras.applications CNN (`tf_precrop.models.names()` minus the bundled CIFAR models), built once
with weights=None at its default input size (the builder's default: 224 for most, 299 for InceptionV3 /
Xception / InceptionResNetV2, 331 for NASNetLarge, and the larger EfficientNet/EfficientNetV2 defaults
unless --size is given):
  - dense MACs and params (`tf_precrop.count`),
  - `plan(model, flops=0.5)`: achieved MACs and params ratio, plan time (median of --repeats calls),
  - `plan(model, params=0.5)`: achieved ratios and plan time,
  - `crop(model, plan)` of the flops=0.5 plan: rebuild time, `count_params() == plan.params`,
    `count(cropped).macs == plan.macs`, and a forward pass on one zero image (finite output, 1000 classes).

Writes benchmarks/results/zoo.{json,csv,md,png}; the JSON is rewritten after every model, and a run with
--models merges its rows into an existing zoo.json (so a subset can be re-run).

Usage (from the repository root):
    python -m benchmarks.zoo                              # every model (~10-20 min on 2 cores)
    python -m benchmarks.zoo --models=resnet50,efficientnetb0
    python -m benchmarks.zoo --size=224                   # every model at 224x224 (331 NASNetLarge, 299 ...)
    python -m benchmarks.zoo --summarize_only             # re-write md/csv/png from zoo.json
"""

import csv
import gc
import json
import os
import platform
import statistics
import subprocess
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_list("models", [], "Models to run (names from tf_precrop.models.names()); empty = every "
                  "keras.applications model.")
flags.DEFINE_string("size", "default", "'default' = each builder's default input size; an integer N = NxN for "
                    "every model except the fixed-size ones (InceptionV3/Xception/InceptionResNetV2 at 299, "
                    "NASNetLarge at 331).")
flags.DEFINE_float("flops", 0.5, "MACs budget of the first plan (and of the crop).")
flags.DEFINE_float("params", 0.5, "Params budget of the second plan.")
flags.DEFINE_integer("repeats", 2, "Plan-time repeats (the median is reported).")
flags.DEFINE_string("out_dir", os.path.join("benchmarks", "results"), "Where zoo.{json,csv,md,png} go.")
flags.DEFINE_bool("summarize_only", False, "Only re-write md/csv/png from the existing zoo.json.")

BUNDLED = ("mobilenet_v2_cifar", "resnet20", "resnet32", "resnet56")
FIXED_SIZE = {"inceptionv3": 299, "xception": 299, "inceptionresnetv2": 299, "nasnetlarge": 331,
              "nasnetmobile": 224}
TARGET_PLAN_SECONDS = 1.0
TARGET_PLAN_MODELS = ("resnet50", "efficientnetb0")
TARGET_CROP_SECONDS = 10.0

CSV_COLUMNS = [
    "model", "input", "layers", "groups", "free_groups", "dense_macs", "dense_params",
    "f_macs_ratio", "f_params_ratio", "f_plan_s", "f_solve_s", "f_round_s",
    "p_macs_ratio", "p_params_ratio", "p_plan_s",
    "crop_s", "crop_cpu_s", "build_s", "build_cpu_s", "f_plan_cpu_s", "params_match", "macs_match", "forward_ok",
    "forward_s", "load1", "error", "note",
]


def _sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info():
    """nproc, CPU model, memory, uptime/load, library versions."""
    import keras  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import cvxpy  # pylint: disable=g-import-not-at-top

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(), "cpu": cpu or platform.processor(), "memory": mem,
        "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
        "cvxpy": cvxpy.__version__, "uptime_start": _sh(["uptime"]),
        "git_commit": _sh(["git", "rev-parse", "--short", "HEAD"]),
        "tf_precrop_dirty": bool(_sh(["git", "status", "--porcelain", "tf_precrop"])),
    }


def zoo_names():
    import tf_precrop  # pylint: disable=g-import-not-at-top

    return [n for n in tf_precrop.models.names() if n not in BUNDLED]


def _input_shape(name):
    if FLAGS.size == "default":
        return None
    if name in FIXED_SIZE:
        return (FIXED_SIZE[name], FIXED_SIZE[name], 3)
    n = int(FLAGS.size)
    return (n, n, 3)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _timed_cpu(fn):
    """(result, wall seconds, CPU seconds of this process, all threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def run_model(name):
    """All measurements for one model; errors are recorded per stage, never raised."""
    import keras  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tf_precrop  # pylint: disable=g-import-not-at-top

    row = {"model": name, "load1": round(os.getloadavg()[0], 2)}
    errors = []
    model = small = None
    try:
        model, row["build_s"], row["build_cpu_s"] = _timed_cpu(
            lambda: tf_precrop.models.build(name, input_shape=_input_shape(name)))
        if None in model.input_shape[1:]:
            # MobileNetV3's builder leaves the spatial size open by default (input_shape=None ->
            # (None, None, 3)); MACs need a fixed size, so use the 224x224 its docs name as the default.
            row["note"] = f"default input {model.input_shape[1:]} has open dimensions; built at 224x224x3"
            model = None  # free it before building again
            model, row["build_s"], row["build_cpu_s"] = _timed_cpu(
                lambda: tf_precrop.models.build(name, input_shape=(224, 224, 3)))
        shape = tuple(model.input_shape[1:])
        row["input"] = "x".join(map(str, shape))
        dense = tf_precrop.count(model)
        row["dense_macs"], row["dense_params"] = dense.macs, dense.params
        row["params_check_dense"] = dense.params == model.count_params()

        # flops budget: median plan time of --repeats calls (the plans are identical).
        times, cpu_times, fplan = [], [], None
        for _ in range(FLAGS.repeats):
            fplan, seconds, cpu = _timed_cpu(lambda: tf_precrop.plan(model, flops=FLAGS.flops))
            times.append(seconds)
            cpu_times.append(cpu)
        row.update(f_macs_ratio=fplan.macs_ratio, f_params_ratio=fplan.params_ratio,
                   f_plan_s=statistics.median(times), f_plan_times=times,
                   f_plan_cpu_s=statistics.median(cpu_times),
                   f_solve_s=fplan.solve_seconds, f_round_s=fplan.round_seconds,
                   groups=len(fplan.groups), free_groups=sum(1 for g in fplan.groups if g.fixed is None),
                   layers=sum(1 for lp in fplan.layers if lp.sets_width))
        try:
            pplan, row["p_plan_s"] = _timed(lambda: tf_precrop.plan(model, params=FLAGS.params))
            row.update(p_macs_ratio=pplan.macs_ratio, p_params_ratio=pplan.params_ratio)
        except Exception as err:  # pylint: disable=broad-except
            errors.append(f"plan(params={FLAGS.params}): {type(err).__name__}: {err}")

        small, row["crop_s"], row["crop_cpu_s"] = _timed_cpu(lambda: tf_precrop.crop(model, fplan))
        row["cropped_params"] = small.count_params()
        row["params_match"] = small.count_params() == fplan.params
        row["macs_match"] = tf_precrop.count(small).macs == fplan.macs
        x = np.zeros((1, *shape), dtype="float32")
        y, row["forward_s"] = _timed(lambda: keras.ops.convert_to_numpy(small(x, training=False)))
        row["forward_ok"] = bool(y.shape == (1, *model.output_shape[1:]) and np.isfinite(y).all())
    except Exception as err:  # pylint: disable=broad-except
        errors.append(f"{type(err).__name__}: {str(err)[:500]}")
    finally:
        model = small = None  # free them before the next model
        keras.backend.clear_session()
        gc.collect()
    row["error"] = "; ".join(errors) or None
    return row


def _load(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def _write_json(path, machine, rows, order):
    rows = sorted(rows, key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))
    data = {"machine": machine, "settings": {"flops": FLAGS.flops, "params": FLAGS.params,
                                             "repeats": FLAGS.repeats, "size": FLAGS.size},
            "rows": rows}
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    return data


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


def write_summary(data, out_dir):
    """zoo.csv, zoo.md and zoo.png from the JSON data."""
    from tf_precrop import report  # pylint: disable=g-import-not-at-top

    rows, machine, settings = data["rows"], data["machine"], data["settings"]
    with open(os.path.join(out_dir, "zoo.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in CSV_COLUMNS})

    f_, p_ = settings["flops"], settings["params"]
    table = []
    for r in rows:
        table.append({
            "model": r["model"], "input": r.get("input"),
            "width layers / groups (free)": (f"{r['layers']} / {r['groups']} ({r['free_groups']})"
                                             if "groups" in r else None),
            "dense GMACs": _fmt(r.get("dense_macs") and r["dense_macs"] / 1e9, ".3f"),
            "dense Mparams": _fmt(r.get("dense_params") and r["dense_params"] / 1e6, ".2f"),
            f"flops={f_:g}: MACs x": _fmt(r.get("f_macs_ratio"), ".4f"),
            f"flops={f_:g}: params x": _fmt(r.get("f_params_ratio"), ".4f"),
            f"params={p_:g}: MACs x": _fmt(r.get("p_macs_ratio"), ".4f"),
            f"params={p_:g}: params x": _fmt(r.get("p_params_ratio"), ".4f"),
            "plan s (median; solve)": (f"{r['f_plan_s']:.2f} ({r['f_solve_s']:.2f})" if "f_plan_s" in r else None),
            f"plan s params={p_:g}": _fmt(r.get("p_plan_s"), ".2f"),
            "crop s (CPU)": (f"{r['crop_s']:.2f} ({r['crop_cpu_s']:.2f})" if "crop_cpu_s" in r
                             else _fmt(r.get("crop_s"), ".2f")),
            "build s (CPU)": (f"{r['build_s']:.2f} ({r['build_cpu_s']:.2f})" if "build_cpu_s" in r
                              else _fmt(r.get("build_s"), ".2f")),
            "params = plan": r.get("params_match"), "MACs = plan": r.get("macs_match"),
            "forward": r.get("forward_ok"), "load1": r.get("load1"),
            "error / note": "; ".join(x for x in (r.get("error"), r.get("note")) if x) or None,
        })
    ok = [r for r in rows if not r.get("error")]
    plan_targets = []
    for name in TARGET_PLAN_MODELS:
        r = next((r for r in rows if r["model"] == name and "f_plan_s" in r), None)
        if r:
            plan_targets.append(f"{name} {r['f_plan_s']:.2f} s "
                                f"({'met' if r['f_plan_s'] < TARGET_PLAN_SECONDS else 'MISSED'}; solve "
                                f"{r['f_solve_s']:.2f} s, rounding {r['f_round_s']:.2f} s)")
    crops = [r for r in rows if "crop_s" in r]
    slow = [f"{r['model']} ({r['crop_s']:.1f} s)" for r in crops if r["crop_s"] >= TARGET_CROP_SECONDS]
    mismatches = [r["model"] for r in rows if r.get("params_match") is False or r.get("macs_match") is False]
    f_dev = [abs(r["f_macs_ratio"] - f_) for r in rows if "f_macs_ratio" in r]
    p_dev = [abs(r["p_params_ratio"] - p_) for r in rows if "p_params_ratio" in r]
    plan_times = sorted(r["f_plan_s"] for r in rows if "f_plan_s" in r)

    lines = [
        "# PreCrop over the keras.applications zoo",
        "",
        "Generated by `python -m benchmarks.zoo` (benchmarks/zoo.py); data in zoo.json / zoo.csv, plot zoo.png.",
        f"Every keras.applications model (Keras {machine.get('keras')}) built with `weights=None` at "
        f"{'its builder default input size' if settings['size'] == 'default' else settings['size']} "
        "(column *input*), 1000 classes.",
        f"`plan(model, flops={f_:g})` and `plan(model, params={p_:g})` with the defaults (round_to=1, "
        "max_ratio=1); *plan s* = wall time of the whole `tf_precrop.plan` call (graph walk, cost model, GP "
        f"solve, integer repair), median of {settings['repeats']} calls, with the GP part in brackets; "
        f"*crop s* = `tf_precrop.crop(model, plan)` (rebuild with fresh init) of the flops={f_:g} plan; "
        "*params = plan* checks `cropped.count_params() == plan.params`, *MACs = plan* checks "
        "`tf_precrop.count(cropped).macs == plan.macs`, *forward* runs the cropped model on one zero image "
        "(finite output of the right shape).",
        "",
        "## Machine and load",
        "",
        f"- {machine.get('nproc')} cores ({machine.get('cpu')}), {machine.get('memory')} RAM; Python "
        f"{machine.get('python')}, TensorFlow {machine.get('tensorflow')}, Keras {machine.get('keras')}, "
        f"cvxpy {machine.get('cvxpy')}.",
        *[f"- Run of {'every model' if r['models'] == 'all' else ', '.join(r['models'])}"
          f"{' (%.0f s)' % r['run_seconds'] if r.get('run_seconds') else ''}"
          f"{', library at commit ' + r['git_commit'] if r.get('git_commit') else ''}"
          f"{' + local changes to tf_precrop/' if r.get('tf_precrop_dirty') else ''}: `uptime` at start "
          f"`{r.get('uptime_start')}`, at end `{r.get('uptime_end')}`"
          for r in machine.get("runs") or [machine]],
        "- Column *load1*: the 1-minute load average when the model started (here "
        + (f"{min(r['load1'] for r in rows if 'load1' in r):g}..{max(r['load1'] for r in rows if 'load1' in r):g}"
           if any("load1" in r for r in rows) else "not recorded")
        + "); a load above 2 means the run got well under the 2 cores, and its times are pessimistic. Every "
        "row of a full run is timed in one process at the load shown; `--models=NAME` re-runs a row.",
        "",
        "## Summary",
        "",
        f"- Models: {len(rows)}, without error: {len(ok)}.",
        f"- Plan-time target (< {TARGET_PLAN_SECONDS:g} s): " + ("; ".join(plan_targets) or "not measured") + ".",
        f"- Plan time over the zoo: median {statistics.median(plan_times):.2f} s, max {plan_times[-1]:.2f} s."
        if plan_times else "- Plan time: not measured.",
        f"- Crop-time target (< {TARGET_CROP_SECONDS:g} s for every model): "
        + ("met by all " + str(len(crops)) + " models" if not slow else "MISSED by " + ", ".join(slow))
        + (f" (max {max(r['crop_s'] for r in crops):.2f} s)." if crops else "."),
        _crop_cpu_line(crops),
        "- Where crop time goes (one cProfile of NASNetMobile's crop, 770 layers, 14.8 s wall / 7.1 s CPU under "
        "load ~7): 54% Keras building the new layers and creating/initialising their 1,126 variables "
        "(`Layer._maybe_build` -> `add_weight`), 25% `Layer.from_config` in tf_precrop/rebuild.py, 6% "
        "re-walking the graph to check that the plan matches the model; no solver work. Column *build s* is "
        "`tf_precrop.models.build` of the dense model, for scale.",
        "- `count_params()` / MACs of the cropped model equal the plan's: "
        + ("all models" if not mismatches else "MISMATCH for " + ", ".join(mismatches)) + ".",
        f"- Achieved MACs ratio at flops={f_:g}: max |ratio - {f_:g}| = {max(f_dev):.4f}; achieved params ratio "
        f"at params={p_:g}: max |ratio - {p_:g}| = {max(p_dev):.4f}." if f_dev and p_dev else "",
        "",
        "## Per model",
        "",
        report.plans_table(table),
        "",
        "![achieved ratios and times](zoo.png)",
        "",
    ]
    with open(os.path.join(out_dir, "zoo.md"), "w") as f:
        f.write("\n".join(lines))
    plot(rows, os.path.join(out_dir, "zoo.png"), f_, p_)


def _crop_cpu_line(crops):
    cpu = [r for r in crops if "crop_cpu_s" in r]
    if not cpu:
        return ""
    over = [f"{r['model']} ({r['crop_cpu_s']:.1f} s)" for r in cpu if r["crop_cpu_s"] >= TARGET_CROP_SECONDS]
    ratios = sorted(r["crop_s"] / r["build_s"] for r in cpu if r.get("build_s"))
    worst = max(cpu, key=lambda r: r["crop_cpu_s"])
    return (f"- Crop CPU time (this process, all threads; less sensitive to the other agents' load than wall "
            f"time): max {worst['crop_cpu_s']:.1f} s ({worst['model']}); "
            + (f"under {TARGET_CROP_SECONDS:g} s for every model" if not over
               else f"{TARGET_CROP_SECONDS:g} s or more for " + ", ".join(over))
            + (f". Crop wall time / dense build wall time: median {statistics.median(ratios):.2f}, "
               f"range {ratios[0]:.2f}..{ratios[-1]:.2f}: a crop costs about one Keras build of the model; "
               "rebuilding layer by layer is mostly single-threaded Python, so wall time tracks CPU time on an "
               "idle machine and grows with the load (column load1)." if ratios else "."))


def plot(rows, path, f_, p_):
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top

    rows = [r for r in rows if "f_macs_ratio" in r]
    x = np.arange(len(rows))
    fig, (ax, ax_t) = plt.subplots(2, 1, sharex=True, figsize=(15, 8.5))
    series = [("f_macs_ratio", f"MACs ratio @ flops={f_:g}"), ("f_params_ratio", f"params ratio @ flops={f_:g}"),
              ("p_macs_ratio", f"MACs ratio @ params={p_:g}"), ("p_params_ratio", f"params ratio @ params={p_:g}")]
    w = 0.2
    for i, (key, label) in enumerate(series):
        ax.bar(x + (i - 1.5) * w, [r.get(key, np.nan) for r in rows], w, label=label, color=f"C{i}")
    ax.axhline(f_, color="k", linewidth=0.8, linestyle="--")
    ax.set_ylabel("achieved ratio to dense")
    ax.set_title("PreCrop on keras.applications: achieved ratios (dashed = budget)")
    ax.legend(fontsize=8, ncol=4, loc="upper left")
    ax.set_ylim(0, 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    ax_t.plot(x, [r.get("f_plan_s", np.nan) for r in rows], "o-", label=f"plan(flops={f_:g}) s, median")
    ax_t.plot(x, [r.get("p_plan_s", np.nan) for r in rows], "^-", label=f"plan(params={p_:g}) s")
    ax_t.plot(x, [r.get("crop_s", np.nan) for r in rows], "s-", label="crop (rebuild) s")
    ax_t.plot(x, [r.get("crop_cpu_s", np.nan) for r in rows], "s:", color="C2", alpha=0.6,
              label="crop CPU s")
    ax_t.plot(x, [r.get("build_s", np.nan) for r in rows], "x--", color="0.5", label="dense build s")
    ax_t.axhline(TARGET_PLAN_SECONDS, color="C0", linewidth=0.8, linestyle="--")
    ax_t.axhline(TARGET_CROP_SECONDS, color="C2", linewidth=0.8, linestyle="--")
    ax_t.set_yscale("log")
    ax_t.set_ylabel("seconds (2 shared cores)")
    ax_t.legend(fontsize=8, loc="upper left")
    ax_t.grid(True, which="both", alpha=0.3)
    ax_t.set_xticks(x, [r["model"] for r in rows], rotation=70, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv):
    del argv
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    json_path = os.path.join(FLAGS.out_dir, "zoo.json")
    if FLAGS.summarize_only:
        write_summary(_load(json_path), FLAGS.out_dir)
        return 0

    import tf_precrop  # pylint: disable=g-import-not-at-top

    order = zoo_names()
    names = [n.strip().lower() for n in FLAGS.models] or order
    unknown = [n for n in names if n not in order]
    if unknown:
        raise app.UsageError(f"Unknown --models {unknown}. Choices: {', '.join(order)}")
    machine = machine_info()
    previous = _load(json_path) if FLAGS.models else None
    rows = [r for r in (previous or {}).get("rows", []) if r["model"] not in names]
    # One entry per run that produced rows of this table (a --models run re-measures some rows).
    run = {"models": FLAGS.models or "all", "uptime_start": machine["uptime_start"],
           "git_commit": machine["git_commit"], "tf_precrop_dirty": machine["tf_precrop_dirty"]}
    machine["runs"] = (previous or {}).get("machine", {}).get("runs", []) + [run]

    # Warm up cvxpy / the solver once, so that the first model's plan time is not the import time.
    tf_precrop.plan(tf_precrop.models.resnet20(), flops=0.5)
    start = time.perf_counter()
    for name in names:
        row, seconds = _timed(lambda: run_model(name))  # pylint: disable=cell-var-from-loop
        row["total_s"] = seconds
        rows.append(row)
        print(f"[zoo] {name}: {seconds:.1f} s " + json.dumps(
            {k: row.get(k) for k in ("input", "f_macs_ratio", "f_params_ratio", "p_macs_ratio", "p_params_ratio",
                                     "f_plan_s", "crop_s", "crop_cpu_s", "build_s", "params_match", "macs_match",
                                     "forward_ok", "load1", "error")}), flush=True)
        run["uptime_end"] = machine["uptime_end"] = _sh(["uptime"])
        _write_json(json_path, machine, rows, order)
    run["uptime_end"] = machine["uptime_end"] = _sh(["uptime"])
    run["run_seconds"] = machine["run_seconds"] = time.perf_counter() - start
    data = _write_json(json_path, machine, rows, order)
    write_summary(data, FLAGS.out_dir)
    print(f"[zoo] {len(names)} models in {machine['run_seconds']:.0f} s -> {FLAGS.out_dir}/zoo.*")
    return 0


if __name__ == "__main__":
    app.run(main)
