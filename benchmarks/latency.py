r"""TFLite latency on this CPU: dense vs PreCrop vs uniform width vs SynFlow-sparse.

ResNet-20 (32x32), MobileNetV2 (224x224) and ResNet-50 (224x224) at MACs ratios
0.75 / 0.5 / 0.25; arms: PreCrop with round_to=1 and 8, uniform width scaling
(one shared ratio, round_to=8) and SynFlow masks exported sparse; 1 and 2
LiteRT threads. Every .tflite export is parity-checked against its Keras model.

Writes benchmarks/results/latency.{md,csv,json,png}; the .tflite files and the
build manifest go to benchmarks/work/latency/ (git-ignored). Building is slow
and reused: a model whose files are all in the manifest is not rebuilt, so
`--stage=build` can run early and `--stage=measure` later, on a quiet machine.
All models are measured in one run (files of a model alternate in rounds).

    python -m benchmarks.latency                  # build what is missing, then measure
    python -m benchmarks.latency --stage=build    # exports only
    python -m benchmarks.latency --stage=measure  # timings + report from the manifest
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

from tf_precrop.export import study

MODELS = {"resnet20": (32, 32, 3), "mobilenet_v2": (224, 224, 3), "resnet50": (224, 224, 3)}
# Timed runs per file: about the same wall time per model (ResNet-50 runs ~100 ms, ResNet-20 ~0.5 ms).
RUNS = {"resnet20": 1000, "mobilenet_v2": 500, "resnet50": 100}
FLOPS = (0.75, 0.5, 0.25)
ARMS = ("dense", "precrop:1", "precrop:8", "uniform:8", "synflow")
THREADS = (1, 2)
ROOT = os.path.dirname(os.path.abspath(__file__))

flags.DEFINE_enum("stage", "all", ["all", "build", "measure"], "What to run.")
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


def _complete(model_name, entry):
    return (entry.get("synflow_iterations") == _iterations(model_name)
            and len(entry["records"]) == 1 + (len(ARMS) - 1) * len(FLOPS)
            and all(os.path.isfile(r["path"]) for r in entry["records"]))


def build(models):
    """Builds and exports the models missing from the manifest."""
    manifest = _load_manifest()
    arms = study.parse_arms(ARMS)
    for name in models:
        if name in manifest and _complete(name, manifest[name]):
            _log(f"{name}: exports reused from {_manifest_path()}")
            continue
        start = time.perf_counter()
        records = study.build_exports(name, MODELS[name], FLOPS, arms, FLAGS.work_dir,
                                      synflow_iterations=_iterations(name), log=_log)
        manifest[name] = {"synflow_iterations": _iterations(name), "records": records,
                          "build_s": time.perf_counter() - start}
        with open(_manifest_path(), "w") as f:
            json.dump(manifest, f, indent=1)
    return manifest


def _uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def _cpu():
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0] if names else platform.processor()} ({os.cpu_count()} logical CPUs)"


def _goal_note(rows):
    goal = study.goal_check(rows)
    if goal["median"] is None:
        return "**Goal**: not evaluated (no 224x224 model measured)."
    values = ", ".join(f"{v:.2f}" for v in goal["values"])
    verdict = "holds" if goal["holds"] else "does NOT hold"
    return (f"**Goal** (PreCrop round_to=8, 224x224 models, 1 thread): median latency ratio / MAC ratio "
            f"= {goal['median']:.2f} (points: {values}) vs limit {goal['limit']:.2f}: the goal {verdict}.")


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
    def point(model_name, method, flops):
        return next(r for r in rows if r["model"] == model_name and r["method"] == method
                    and r["target_flops"] == flops and r["num_threads"] == 1)

    parts = []
    for model_name in dict.fromkeys(r["model"] for r in rows if r["input_shape"][0] >= 224):
        for flops in FLOPS:
            p, u = point(model_name, "precrop r8", flops), point(model_name, "uniform r8", flops)
            parts.append(f"{model_name} @ {flops:g}: params {p['params_ratio']:.2f} vs {u['params_ratio']:.2f}, "
                         f"latency/MACs {p['latency_over_macs']:.2f} vs {u['latency_over_macs']:.2f}")
    if not parts:
        return "**PreCrop vs uniform width**: no 224x224 model measured."
    return ("**PreCrop r8 vs uniform r8 at the same MACs** (224x224, 1 thread; params/dense and latency ratio "
            "per MAC ratio): " + "; ".join(parts) + ". Where PreCrop keeps more parameters than uniform scaling at "
            "the same MACs, it keeps relatively more of the layers with many weights per MAC (the late, "
            "low-resolution ones). At batch 1 such layers are bound by reading their weights more than by "
            "arithmetic, so latency falls more slowly than MACs. (An interpretation of these aggregate numbers, "
            "not a per-layer profile.)")


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


def measure_and_report(manifest, models):
    """Times every export of ``models`` and writes the results."""
    uptime_before = _uptime()
    rows = []
    for name in models:
        rows += study.measure(manifest[name]["records"], THREADS, warmup_runs=FLAGS.warmup_runs,
                              num_runs=_runs(name), rounds=FLAGS.rounds, log=_log)
    uptime_after = _uptime()
    import ai_edge_litert
    import tensorflow as tf

    synflow_s = {name: [r["build_s"] for r in manifest[name]["records"] if r["method"] == "synflow"]
                 for name in models}
    notes = [
        _goal_note(rows),
        _params_note(rows),
        _sparse_note(rows),
        f"**Setup.** Command: `{' '.join(['python -m benchmarks.latency', *sys.argv[1:]])}` (exports built "
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
                               title="TFLite latency at equal FLOPs: dense vs PreCrop vs uniform width vs "
                                     "SynFlow-sparse", notes=notes)
    _log(f"wrote {', '.join(paths.values())}")


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # TF's SavedModel/converter INFO logs drown the progress lines.
        logging.set_verbosity(logging.WARNING)
    unknown = [m for m in FLAGS.models if m not in MODELS]
    if unknown:
        raise app.UsageError(f"--models must be a subset of {list(MODELS)}. Received: {unknown}")
    manifest = build(FLAGS.models) if FLAGS.stage in ("all", "build") else _load_manifest()
    if FLAGS.stage == "build":
        return
    missing = [m for m in FLAGS.models if m not in manifest or not _complete(m, manifest[m])]
    if missing:
        raise app.UsageError(f"No complete exports for {missing}; run with --stage=build first.")
    measure_and_report(manifest, FLAGS.models)


if __name__ == "__main__":
    app.run(main)
