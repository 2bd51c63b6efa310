r"""Latency at equal FLOPs on this CPU: dense vs PreCrop vs uniform width vs SynFlow-sparse.

Builds every arm of a model at each FLOPs ratio, exports it to TFLite (each
export is parity-checked against its Keras model), measures all files of the
model alternately in rounds with LiteRT for each thread count, and writes a
Markdown table, CSV, JSON and a PNG (latency ratio vs MAC ratio, one line per
method) to --out_dir. The .tflite files go to --work_dir (keep it out of git).

Methods: dense, precrop, precrop_latency, uniform, synflow; precrop,
precrop_latency and uniform take an optional width multiple, e.g. precrop:1
(default: --round_to). precrop_latency crops to a *latency* budget (each
--flops value is then the target predicted-latency ratio) with the latency
model in --latency_model (JSON of tf_precrop.LatencyModel), or, without it, one
calibrated here first (--calibration_samples narrowed variants, saved to
<out_dir>/latency_model.json).

Example:

    python -m apps.benchmark --model=mobilenet_v2 --flops=0.5,0.25 \
        --methods=dense,precrop,uniform,synflow --threads=1,2 --round_to=8 \
        --input_shape=224,224,3 --out_dir=results/mnv2
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

import apps
from tf_precrop.export import study

flags.DEFINE_string("model", "resnet20", "Model name for tf_precrop.models.build (e.g. resnet20, mobilenet_v2, "
                    "resnet50).")
flags.DEFINE_list("flops", ["0.5", "0.25"], "Target MACs ratios (FLOPs = 2 x MACs: the ratio is the same).")
flags.DEFINE_list("methods", ["dense", "precrop", "uniform", "synflow"],
                  "Arms: dense, precrop[:round_to], precrop_latency[:round_to] (a latency budget, see "
                  "--latency_model), uniform[:round_to], synflow.")
flags.DEFINE_list("threads", ["1", "2"], "LiteRT interpreter thread counts.")
flags.DEFINE_integer("round_to", 8, "Default width multiple of precrop and uniform.", lower_bound=1)
flags.DEFINE_list("input_shape", None, "Model input shape, e.g. 224,224,3 (default: the model's).")
flags.DEFINE_string("out_dir", "benchmark_results", "Where the .md/.csv/.json/.png summary goes.")
flags.DEFINE_string("work_dir", None, "Where the .tflite files go (default: <out_dir>/tflite).")
flags.DEFINE_integer("num_runs", 100, "Timed runs per file and thread count.", lower_bound=1)
flags.DEFINE_integer("warmup_runs", 10, "Untimed runs per file before timing.", lower_bound=0)
flags.DEFINE_integer("rounds", 10, "Rounds the timed runs are spread over (files alternate).", lower_bound=1)
flags.DEFINE_integer("synflow_iterations", 100, "SynFlow prune-rescore iterations.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Initialisation seed.")
flags.DEFINE_string("latency_model", None, "JSON file of a tf_precrop.LatencyModel for precrop_latency "
                    "(default: calibrate one here at the first --threads value).")
flags.DEFINE_integer("calibration_samples", 8, "Narrowed variants timed to calibrate the latency model.",
                     lower_bound=4)

FLAGS = flags.FLAGS


def _parse(values, cast, name):
    try:
        return [cast(v) for v in values]
    except ValueError:
        raise app.UsageError(
            f"--{name} must be a comma-separated list of numbers. Received: {','.join(values)}") from None


def _latency_model(input_shape, num_threads, log):
    """The --latency_model file, or a latency model calibrated here (saved beside the results)."""
    import tf_precrop  # pylint: disable=g-import-not-at-top
    from tf_precrop import export  # pylint: disable=g-import-not-at-top

    if FLAGS.latency_model:
        return apps.load_latency_model(FLAGS.latency_model)
    model = tf_precrop.models.build(FLAGS.model, input_shape=tuple(input_shape) if input_shape else None)
    log(f"calibrating a latency model on {FLAGS.calibration_samples} narrowed variants ...")
    cal = export.calibrate_latency(model, samples=FLAGS.calibration_samples, round_to=FLAGS.round_to,
                                   num_threads=num_threads, warmup_runs=FLAGS.warmup_runs,
                                   num_runs=FLAGS.num_runs, rounds=FLAGS.rounds, seed=FLAGS.seed, log=log)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    with open(os.path.join(FLAGS.out_dir, "latency_model.json"), "w") as f:
        f.write(cal.latency_model.to_json())
    log(f"{cal.latency_model} (worst calibration error {cal.max_relative_error:+.1%})")
    return cal.latency_model


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # TF's SavedModel/converter INFO logs drown the progress lines.
        logging.set_verbosity(logging.WARNING)
    flops = _parse(FLAGS.flops, float, "flops")
    threads = _parse(FLAGS.threads, int, "threads")
    bad = [f for f in flops if not 0 < f <= 1]
    if bad:
        raise app.UsageError(f"--flops ratios must be in (0, 1]. Received: {bad}")
    if any(n < 1 for n in threads):
        raise app.UsageError(f"--threads must be >= 1. Received: {threads}")
    try:
        arms = study.parse_arms(FLAGS.methods, round_to=FLAGS.round_to)
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    input_shape = _parse(FLAGS.input_shape, int, "input_shape") if FLAGS.input_shape else None
    work_dir = FLAGS.work_dir or os.path.join(FLAGS.out_dir, "tflite")

    def log(message):
        print(message, file=sys.stderr, flush=True)

    latency_model = None
    if any(arm.method == "precrop_latency" for arm in arms):
        latency_model = _latency_model(input_shape, threads[0], log)
    records = study.build_exports(FLAGS.model, input_shape, flops, arms, work_dir, seed=FLAGS.seed,
                                  synflow_iterations=FLAGS.synflow_iterations, latency_model=latency_model,
                                  log=log)
    load_before = os.getloadavg()
    rows = study.measure(records, threads, warmup_runs=FLAGS.warmup_runs, num_runs=FLAGS.num_runs,
                         rounds=FLAGS.rounds, log=log)
    load_after = os.getloadavg()
    notes = [
        f"Command: `python -m apps.benchmark {' '.join(sys.argv[1:])}`. Latency: LiteRT "
        f"(ai_edge_litert) p50 of {FLAGS.num_runs} runs after {FLAGS.warmup_runs} warm-up runs, files of the "
        f"model alternating in {FLAGS.rounds} rounds; latency/dense is p50 over the dense p50 at the same "
        "thread count. SynFlow MACs and params count non-zero weights only.",
        "Load average (1, 5, 15 min) before measuring: {:.2f}, {:.2f}, {:.2f}; after: {:.2f}, {:.2f}, {:.2f}."
        .format(*load_before, *load_after),
    ]
    paths = study.write_report(rows, FLAGS.out_dir, f"benchmark_{FLAGS.model}",
                               title=f"Latency at equal FLOPs: {FLAGS.model} "
                                     f"{'x'.join(map(str, records[0]['input_shape']))}",
                               notes=notes)
    print(study.markdown_table(rows))
    log(f"wrote {', '.join(paths.values())}")


if __name__ == "__main__":
    app.run(main)
