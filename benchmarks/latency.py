r"""TFLite latency on this CPU: dense vs PreCrop vs uniform width vs SynFlow-sparse.

ResNet-20 (32x32), MobileNetV2 (224x224) and ResNet-50 (224x224) at MACs ratios
0.75 / 0.5 / 0.25; arms: PreCrop with round_to=1, 8 and 16, PreCrop at a latency
budget (round_to=8 and 16; the ratio is the target of a latency model fitted here to
randomly narrowed variants of the model, `tf_precrop.export.calibrate_latency`),
uniform width scaling (one shared ratio, round_to=8 and 16) and SynFlow masks exported
sparse; 1 and 2 LiteRT threads. Every .tflite export is parity-checked against
its Keras model.

Writes benchmarks/results/latency.{md,csv,json,png}; the .tflite files and the
build manifest go to benchmarks/work/latency/ (git-ignored). Building is slow
and reused: a model whose files are all in the manifest is not rebuilt, so
`--stage=build` can run early and `--stage=measure` later, on a quiet machine.
All models are measured in one run (files of a model alternate in rounds).

    python -m benchmarks.latency                    # build, calibrate, measure
    python -m benchmarks.latency --stage=build      # exports only (any load)
    python -m benchmarks.latency --stage=calibrate  # latency models + the latency-budget arm (quiet)
    python -m benchmarks.latency --stage=measure    # timings + report from the manifest (quiet)
    python -m benchmarks.latency --stage=report     # the report again from the last measurement
"""

import json
import os
import platform
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

import tf_precrop
from tf_precrop.export import study

MODELS = {"resnet20": (32, 32, 3), "mobilenet_v2": (224, 224, 3), "resnet50": (224, 224, 3)}
# Timed runs per file: about the same wall time per model (ResNet-50 runs ~100 ms, ResNet-20 ~0.5 ms).
RUNS = {"resnet20": 1000, "mobilenet_v2": 500, "resnet50": 100}
FLOPS = (0.75, 0.5, 0.25)
# round_to=16 beside 8: AVX-512 holds 16 floats, and XNNPack's f32 kernels here tile output channels by 16.
ARMS = ("dense", "precrop:1", "precrop:8", "precrop:16", "precrop_latency:8", "precrop_latency:16", "uniform:8",
        "uniform:16", "synflow")
# Randomly narrowed variants per model for the latency-model fit (never the measured arms themselves).
CALIBRATION_SAMPLES = {"resnet20": 12, "mobilenet_v2": 12, "resnet50": 8}
THREADS = (1, 2)
ROOT = os.path.dirname(os.path.abspath(__file__))

flags.DEFINE_enum("stage", "all", ["all", "build", "calibrate", "measure", "report"],
                  "What to run: build (exports, no timing), calibrate (times the calibration sets, fits the "
                  "latency models, builds the latency-budget arm), measure (times every arm, writes the "
                  "report); report (the report again from the last measurement); all = build, calibrate "
                  "and measure in turn. Calibrate and measure want a quiet machine.")
flags.DEFINE_list("models", list(MODELS), f"Subset of {list(MODELS)}.")
flags.DEFINE_integer("synflow_iterations", 100, "SynFlow prune-rescore iterations.", lower_bound=1)
flags.DEFINE_list("synflow_iterations_override", ["resnet50:20"],
                  "Per-model SynFlow iterations, model:iterations (ResNet-50 at 224x224 has 13x the MACs of "
                  "MobileNetV2, whose 100 iterations already take minutes per FLOPs ratio on 2 shared cores).")
flags.DEFINE_integer("num_runs", None, "Timed runs per file and thread count (default: per model, "
                     f"{RUNS}).", lower_bound=1)
flags.DEFINE_integer("warmup_runs", 10, "Untimed runs per file.", lower_bound=0)
flags.DEFINE_integer("rounds", 20, "Rounds the timed runs are spread over.", lower_bound=1)
flags.DEFINE_string("work_dir", os.path.join(ROOT, "work", "latency"), "Where .tflite files go (git-ignored).")
flags.DEFINE_string("out_dir", os.path.join(ROOT, "results"), "Where latency.{md,csv,json,png} go.")

FLAGS = flags.FLAGS


def _log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _manifest_path():
    return os.path.join(FLAGS.work_dir, "manifest.json")


def _load_manifest():
    if not os.path.exists(_manifest_path()):
        return {}
    with open(_manifest_path()) as f:
        return json.load(f)


def _iterations(model_name):
    overrides = dict(item.split(":", 1) for item in FLAGS.synflow_iterations_override)
    return int(overrides.get(model_name, FLAGS.synflow_iterations))


def _targets(arm, entry):
    """The ratios an arm is built at (latency targets below the model's minimum are left out)."""
    if arm.method == "dense":
        return [1.0]
    return [f for f in FLOPS if [arm.label, f] not in entry.get("infeasible", [])]


def _missing_arms(model_name, entry):
    """Arms of ``ARMS`` with a record or file missing (SynFlow also when its iterations changed)."""
    have = {(r["method"], r["target_flops"]) for r in entry.get("records", []) if os.path.isfile(r["path"])}
    missing = []
    for arm in study.parse_arms(ARMS):
        stale = arm.method == "synflow" and entry.get("synflow_iterations") != _iterations(model_name)
        if stale or any((arm.label, f) not in have for f in _targets(arm, entry)):
            missing.append(arm)
    return missing


def _find_infeasible(model, entry):
    """Targets no allowed widths can reach (e.g. ResNet-20 at 32x32 with round_to=16, or at a latency
    budget where per-op time dominates): they are left out of the arm, and the report says so."""
    entry["infeasible"] = []
    for arm in study.parse_arms(ARMS):
        if arm.method in ("dense", "synflow") or (arm.method == "precrop_latency" and "calibration" not in entry):
            continue
        for f in FLOPS:
            budget = ({"latency": f, "latency_model": _latency_model(entry)} if arm.method == "precrop_latency"
                      else {"flops": f, "uniform": arm.method == "uniform"})
            try:
                tf_precrop.plan(model, round_to=arm.round_to, **budget)
            except tf_precrop.InfeasibleBudgetError as err:
                _log(f"{model.name}: {arm.label} at {f:g} skipped: {err}")
                entry["infeasible"].append([arm.label, f])


def _complete(model_name, entry):
    return "calibration" in entry and "infeasible" in entry and not _missing_arms(model_name, entry)


def _latency_model(entry):
    return tf_precrop.LatencyModel(**entry["calibration"]["latency_model"])


def _save(manifest):
    with open(_manifest_path(), "w") as f:
        json.dump(manifest, f, indent=1)


def _build_arms(name, model, entry, arms):
    """Exports ``arms`` of one model (replacing their old records) and keeps the records in ARMS order."""
    labels = {arm.label for arm in arms}
    latency_model = _latency_model(entry) if "calibration" in entry else None
    records = []
    for arm in arms:
        records += study.build_exports(name, MODELS[name], _targets(arm, entry), [arm], FLAGS.work_dir,
                                       synflow_iterations=_iterations(name), latency_model=latency_model,
                                       log=_log)
    order = [arm.label for arm in study.parse_arms(ARMS)]
    entry["records"] = sorted([r for r in entry["records"] if r["method"] not in labels] + records,
                              key=lambda r: (order.index(r["method"]), -r["target_flops"]))


def build(models):
    """Exports what the manifest lacks, except the latency-budget arm (it needs `calibrate` first):
    the arms, and each model's calibration set (dense + randomly narrowed variants)."""
    from tf_precrop import export  # pylint: disable=g-import-not-at-top

    manifest = _load_manifest()
    for name in models:
        entry = manifest.setdefault(name, {"records": []})
        missing = [a for a in _missing_arms(name, entry) if a.method != "precrop_latency"]
        calibration_set = entry.get("calibration_set", [])
        have_calibration_set = bool(calibration_set) and all(os.path.isfile(r["path"]) for r in calibration_set)
        if not missing and have_calibration_set:
            _log(f"{name}: exports reused from {_manifest_path()}")
            continue
        model = tf_precrop.models.build(name, input_shape=MODELS[name])
        if not have_calibration_set:
            entry["calibration_set"] = export.export_calibration_set(
                model, os.path.join(FLAGS.work_dir, "calibration"), samples=CALIBRATION_SAMPLES[name],
                round_to=8, log=_log)
            entry.pop("calibration", None)
            _save(manifest)
        if missing:
            _find_infeasible(model, entry)
            missing = [a for a in _missing_arms(name, entry) if a.method != "precrop_latency"]
            _build_arms(name, model, entry, missing)
            entry["synflow_iterations"] = _iterations(name)
            _save(manifest)
    return manifest


def calibrate(models):
    """Times each calibration set (quiet machine!), fits the latency model, builds the latency-budget arm."""
    from tf_precrop import export  # pylint: disable=g-import-not-at-top

    manifest = _load_manifest()
    for name in models:
        entry = manifest[name]
        if _complete(name, entry):
            _log(f"{name}: latency model reused from {_manifest_path()}")
            continue
        if "calibration" not in entry:
            start = time.perf_counter()
            cal = export.fit_calibration_set(
                entry["calibration_set"], num_threads=1, warmup_runs=FLAGS.warmup_runs,
                num_runs=_runs(name) // 2, rounds=FLAGS.rounds,
                name=f"{name} {MODELS[name][0]}x{MODELS[name][1]}, LiteRT x86 1 thread")
            _log(f"{name}: {cal.latency_model} (worst calibration error {cal.max_relative_error:+.1%})")
            entry["calibration"] = {"latency_model": json.loads(cal.latency_model.to_json()), "rows": cal.rows,
                                    "seconds": time.perf_counter() - start, "load": _uptime()}
            entry.pop("infeasible", None)
            entry["records"] = [r for r in entry["records"] if not r["method"].startswith("precrop_latency")]
            _save(manifest)
        model = tf_precrop.models.build(name, input_shape=MODELS[name])
        _find_infeasible(model, entry)
        _build_arms(name, model, entry, _missing_arms(name, entry))
        for record in entry["records"]:
            arm = next(a for a in study.parse_arms(ARMS) if a.label == record["method"])
            record["predicted_latency_ratio"] = study.predicted_latency_ratio(
                model, arm, record["target_flops"], _latency_model(entry))
        _save(manifest)
    return manifest


def _uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def _cpu():
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0] if names else platform.processor()} ({os.cpu_count()} logical CPUs)"


GOAL_ARMS = (("precrop r8", "PreCrop, FLOPs budget, round_to=8 (the goal's arm)"),
             ("precrop r16", "PreCrop, FLOPs budget, round_to=16"),
             ("precrop_latency r8", "PreCrop, latency budget, round_to=8"),
             ("precrop_latency r16", "PreCrop, latency budget, round_to=16"),
             ("precrop r1", "PreCrop, FLOPs budget, round_to=1"),
             ("uniform r8", "uniform width, round_to=8 (the issue's reference)"),
             ("uniform r16", "uniform width, round_to=16"))


def _goal_note(rows):
    lines = ["**Goal**: median 1-thread latency ratio / MAC ratio <= 1.10 on the 224x224 models (MobileNetV2 and "
             "ResNet-50, in the order of the table). The goal is stated for PreCrop with round_to=8; the other "
             "arms are shown for comparison.", "",
             "| arm | latency ratio / MAC ratio per point | median | <= 1.10? |", "|---|---|---:|---|"]
    for method, what in GOAL_ARMS:
        goal = study.goal_check(rows, method=method)
        if goal["median"] is None:
            continue
        lines.append(f"| {what} | {', '.join(f'{v:.2f}' for v in goal['values'])} | {goal['median']:.2f} | "
                     f"{'yes' if goal['holds'] else 'no'} |")
    return "\n".join(lines)


def _shares(manifest, name):
    """Shares of the dense model's predicted time: (MACs, tensor traffic, per-op)."""
    lm = manifest[name]["calibration"]["latency_model"]
    dense = next(r for r in manifest[name]["calibration"]["rows"] if r["name"] == "dense")
    parts = np.array([lm["ns_per_mac"] * dense["macs"] + lm["ns_per_depthwise_mac"] * dense["depthwise_macs"],
                      lm["ns_per_element"] * dense["elements"], lm["ns_per_op"] * dense["ops"]])
    return parts / parts.sum()


def _floor_note(manifest, models):
    """Why the goal gets harder as models shrink, from the fitted shares."""
    parts = []
    for name in models:
        if MODELS[name][0] < 224:
            continue
        mac, traffic, ops = _shares(manifest, name)
        for m in FLOPS:
            limit = (1.10 * m - mac * m - ops) / traffic
            parts.append(f"{name} at MAC ratio {m:g}: tensor traffic ratio <= {limit:.2f} (a uniform width "
                         f"cut gives about sqrt({m:g}) = {m ** 0.5:.2f})")
    return ("**Why the ratio grows as models shrink.** With the fitted shares, latency ratio = MACs share x MAC "
            "ratio + traffic share x traffic ratio + per-op share, and the per-op part does not shrink. "
            "Thinning a layer by r cuts its MACs by r^2 and its tensors by r only. Latency <= 1.10 x MAC "
            "ratio therefore needs: " + "; ".join(parts) + ". At the 0.25 points, tensors would have to shrink "
            "about as fast as MACs. A width cut does not do that: tensors shrink with the square root of the MACs. "
            "So on this CPU, at batch 1, every width-scaling arm, uniform included, moves away from the goal at "
            "0.25.")


def _point(rows, model_name, method, target, threads=1):
    """The row of one arm at one target ratio and thread count, or None."""
    return next((r for r in rows if r["model"] == model_name and r["method"] == method
                 and r["target_flops"] == target and r["num_threads"] == threads), None)


def _latency_target_note(rows):
    """How close the latency-budget arm lands to its target, and what it buys over the FLOPs budget."""
    parts = []
    for r in rows:
        if r["method"].startswith("precrop_latency") and r["num_threads"] == 1 and r["input_shape"][0] >= 224:
            flops_arm = _point(rows, r["model"], r["method"].replace("precrop_latency", "precrop"),
                               r["target_flops"])
            vs = ("" if flops_arm is None else
                  f", {r['p50_ms'] / flops_arm['p50_ms'] - 1:+.0%} vs the FLOPs budget at the same ratio")
            parts.append(f"{r['model']} {r['method'].split()[-1]} @ {r['target_flops']:g}: measured "
                         f"{r['latency_ratio']:.3f}{vs}")
    if not parts:
        return ""
    return ("**Latency budget: target vs measured** (224x224, 1 thread; the target is the predicted latency "
            "ratio): " + "; ".join(parts) + ".")


def _latency_model_note(rows, manifest, models):
    """What the fitted latency models say, and how well they predict the measured arms."""
    lines = []
    for name in models:
        cal = manifest[name]["calibration"]
        lm = cal["latency_model"]
        errors = [abs(r["predicted_latency_ratio"] / r["latency_ratio"] - 1) for r in rows
                  if r["model"] == name and r["num_threads"] == 1 and r.get("predicted_latency_ratio")
                  and r["method"] != "dense"]
        mac, traffic, ops = _shares(manifest, name)
        lines.append(
            f"{name}: {lm['ns_per_mac'] * 1e3:.2f} ps/MAC, {lm['ns_per_depthwise_mac'] * 1e3:.2f} ps/depthwise MAC, "
            f"{lm['ns_per_element'] * 1e3:.0f} ps/tensor element, {lm['ns_per_op'] * 1e-3:.2f} us/op; dense time "
            f"{mac:.0%} MACs, {traffic:.0%} tensor traffic, {ops:.0%} per-op; "
            f"{len(cal['rows'])} calibration models (worst error "
            f"{max(abs(r['relative_error']) for r in cal['rows']):.1%}, {cal['seconds']:.0f} s); on the measured "
            f"arms (not used for fitting) predicted vs measured latency ratio differ by median "
            f"{float(np.median(errors)):.1%}, worst {max(errors):.1%}")
    return ("**Latency model** (`tf_precrop.export.calibrate_latency`: randomly narrowed variants of each model, "
            "exported and timed here at 1 thread; rates fitted by non-negative least squares): "
            + "; ".join(lines) + ". Tensor traffic (the elements every conv reads and writes) is what MACs miss: "
            "PreCrop at a FLOPs budget thins the narrow layers (bottlenecks, where a removed channel saves the "
            "most MACs per kept weight) and keeps the wide expansions, whose tensors still have to be written "
            "and read; the latency budget prices that traffic and cuts the wide tensors too.")


def _median(rows, method, key):
    return float(np.median([r[key] for r in rows if r["method"] == method and r["num_threads"] == 1]))


def _sparse_note(rows):
    points = "; ".join(
        f"{r['model']} @ {r['target_flops']:g}: file {r['size_bytes'] / d['size_bytes']:.2f}x, "
        f"latency {r['latency_ratio']:.2f}x"
        for r in rows if r["method"] == "synflow" and r["num_threads"] == 1
        for d in rows if d["model"] == r["model"] and d["method"] == "dense" and d["num_threads"] == 1
    )
    return (
        "**SynFlow-sparse on this x86 CPU** (vs dense, 1 thread): " + points + ". Median latency ratio "
        f"{_median(rows, 'synflow', 'latency_ratio'):.2f} for a median MAC ratio of "
        f"{_median(rows, 'synflow', 'macs_ratio'):.2f}, against {_median(rows, 'precrop r8', 'latency_ratio'):.2f} "
        f"for PreCrop r8 (median MAC ratio {_median(rows, 'precrop r8', 'macs_ratio'):.2f}). Why: "
        "EXPERIMENTAL_SPARSITY stores the pruned kernels compressed, which is all the file-size gain; at load "
        "time the runtime densifies them, and XNNPack's sparse-inference path (sparse 1x1 convolutions in NCHW "
        "layout) is by design only used on ARM and WebAssembly, never on x86 with AVX, and even there only for "
        "1x1 convolutions with >= 2/3 zeros. So every MAC of the dense model is still executed here; PreCrop's "
        "removed channels are not."
    )


def _params_note(rows):
    parts = []
    for model_name in dict.fromkeys(r["model"] for r in rows if r["input_shape"][0] >= 224):
        for flops in FLOPS:
            p, u = _point(rows, model_name, "precrop r8", flops), _point(rows, model_name, "uniform r8", flops)
            parts.append(f"{model_name} @ {flops:g}: params {p['params_ratio']:.2f} vs {u['params_ratio']:.2f}, "
                         f"latency/MACs {p['latency_over_macs']:.2f} vs {u['latency_over_macs']:.2f}")
    if not parts:
        return "**PreCrop vs uniform width**: no 224x224 model measured."
    return ("**PreCrop r8 vs uniform r8 at the same MACs** (224x224, 1 thread; params/dense and latency ratio "
            "per MAC ratio): " + "; ".join(parts) + ".")


def _runs(model_name):
    return FLAGS.num_runs or RUNS[model_name]


def _parity_caveat(rows):
    exact = [m for m in dict.fromkeys(r["model"] for r in rows)
             if all(r["max_abs_diff"] == 0.0 for r in rows if r["model"] == m)]
    if not exact:
        return ""
    return (f" For {', '.join(exact)} the difference is exactly 0: with random weights and batch-norm "
            "statistics at their initial values the softmax output is the same for every input, so that check "
            "says little; tests/test_export.py checks a cropped MobileNetV2 with non-trivial statistics.")


def _measurement_path():
    return os.path.join(FLAGS.work_dir, "measurement.json")


def measure(manifest, models):
    """Times every export of ``models``; keeps the rows (and the load around them) for `report`."""
    uptime_before = _uptime()
    rows = []
    for name in models:
        rows += study.measure(manifest[name]["records"], THREADS, warmup_runs=FLAGS.warmup_runs,
                              num_runs=_runs(name), rounds=FLAGS.rounds, log=_log)
    measurement = {"rows": rows, "models": models, "uptime_before": uptime_before, "uptime_after": _uptime(),
                   "command": " ".join(["python -m benchmarks.latency", *sys.argv[1:]])}
    with open(_measurement_path(), "w") as f:
        json.dump(measurement, f, indent=1)
    return measurement


def report(manifest, measurement):
    """Writes latency.{md,csv,json,png} from a measurement (`--stage=report` redoes it without timing)."""
    rows, models = measurement["rows"], measurement["models"]
    uptime_before, uptime_after = measurement["uptime_before"], measurement["uptime_after"]
    import ai_edge_litert
    import tensorflow as tf

    synflow_s = {name: [r["build_s"] for r in manifest[name]["records"] if r["method"] == "synflow"]
                 for name in models}
    notes = [
        _goal_note(rows),
        _latency_model_note(rows, manifest, models),
        _latency_target_note(rows),
        _floor_note(manifest, models),
        _params_note(rows),
        _sparse_note(rows),
        f"**Setup.** Command: `{measurement['command']}` (exports built "
        "once and reused, then all models measured in one run)."
        f" CPU: {_cpu()}, shared with other jobs. TensorFlow {tf.__version__}, ai-edge-litert "
        f"{getattr(ai_edge_litert, '__version__', 'unknown')}. Latency: LiteRT interpreter (default XNNPack "
        "delegate), batch 1, p50 of " + ", ".join(f"{_runs(n)} ({n})" for n in models)
        + f" timed runs after {FLAGS.warmup_runs} warm-up runs; the "
        f"files of a model alternate in {FLAGS.rounds} rounds so background load hits them alike; "
        "latency/dense = p50 / dense p50 at the same thread count. MACs and params of SynFlow count non-zero "
        "weights (the sparse arm's nominal cost); every other arm executes exactly its MACs. Models have random "
        "weights (latency does not depend on them). Every export passed the float parity check "
        f"(max |tflite - keras| <= 1e-4; worst {max(r['max_abs_diff'] for r in rows):.1e}).{_parity_caveat(rows)}",
        "**SynFlow** iterations and the time to compute the masks, apply them with TF-MOT, strip and export, "
        "per FLOPs ratio (0.75, 0.5, 0.25): "
        + "; ".join(f"{n}: {manifest[n]['synflow_iterations']} iterations, " + ", ".join(f"{s:.0f} s" for s in v)
                    for n, v in synflow_s.items())
        + ". 100 iterations is the paper's setting; ResNet-50 at 224x224 (13x MobileNetV2's MACs) uses fewer "
        "(`--synflow_iterations_override`) to fit the time budget on this shared 2-core machine. The sparse "
        "arm's latency does not depend on which weights are zero, only its file size and masks do.",
        f"**Load** (`uptime`) before measuring: `{uptime_before}`; after: `{uptime_after}`.",
        "32x32 models (ResNet-20) are dominated by per-operator overhead: reported, no goal.",
    ]
    paths = study.write_report(rows, FLAGS.out_dir, "latency",
                               title="TFLite latency at equal FLOPs: dense vs PreCrop (FLOPs or latency "
                                     "budget) vs uniform width vs SynFlow-sparse", notes=notes)
    _log(f"wrote {', '.join(paths.values())}")


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # TF's SavedModel/converter INFO logs drown the progress lines.
        logging.set_verbosity(logging.WARNING)
    unknown = [m for m in FLAGS.models if m not in MODELS]
    if unknown:
        raise app.UsageError(f"--models must be a subset of {list(MODELS)}. Received: {unknown}")
    if FLAGS.stage in ("all", "build"):
        build(FLAGS.models)
    if FLAGS.stage in ("all", "calibrate"):
        calibrate(FLAGS.models)
    if FLAGS.stage not in ("all", "measure", "report"):
        return
    manifest = _load_manifest()
    if FLAGS.stage == "report":
        if not os.path.exists(_measurement_path()):
            raise app.UsageError(f"No measurement in {_measurement_path()}; run --stage=measure first.")
        with open(_measurement_path()) as f:
            report(manifest, json.load(f))
        return
    missing = [m for m in FLAGS.models if m not in manifest or not _complete(m, manifest[m])]
    if missing:
        raise app.UsageError(f"No complete exports for {missing}; run --stage=build and --stage=calibrate "
                             "first.")
    report(manifest, measure(manifest, FLAGS.models))


if __name__ == "__main__":
    app.run(main)
