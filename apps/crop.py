r"""Plans (and optionally builds) a cropped or re-configured model: no data, no network.

PreCrop (`--mode=crop`) shrinks channel widths to a MACs and/or parameter
budget; PreConfig (`--mode=preconfig`) redistributes them at the dense cost
(or any budget), letting layers grow up to `--max_ratio`.

Usage:
    python -m apps.crop --model=resnet50 --flops=0.5 --round_to=8 \
        --save=small.keras --plot=widths.png --json=plan.json
    python -m apps.crop --model=efficientnetb0 --mode=preconfig --flops=1.0 --params=0.8
    python -m apps.crop --model_path=my_model.keras --params=0.3
    python -m apps.crop --model=mobilenet_v2 --latency=0.5 --latency_model=device.json --round_to=8

Prints the plan table (per-layer widths, params and MACs before -> after) and a
one-line summary: dense vs result MACs and params, the achieved ratios and the
planning time.
"""

import time

from absl import app
from absl import flags
import keras

import tf_precrop
import apps
from apps import common
from apps import model_flags  # noqa: F401  (--model_path, --ignored_layers, --save)

FLAGS = flags.FLAGS
# List the shared flags of apps/common.py (--model, --flops, ...) under --help, not only --helpfull.
flags.adopt_module_key_flags(common)

flags.DEFINE_enum("mode", "crop", ["crop", "preconfig"],
                  "crop: shrink to the budget (PreCrop); preconfig: redistribute widths, "
                  "layers may grow up to --max_ratio (PreConfig).")
flags.DEFINE_list("input_shape", None, "Model input shape, e.g. 224,224,3 (default: the model's).")
flags.DEFINE_integer("num_classes", None, "Classifier outputs (default: the model's).",
                     lower_bound=1)
flags.DEFINE_string("plot", None, "Write a PNG of per-layer widths, dense vs result.")
flags.DEFINE_string("json", None, "Write the plan as JSON (tf_precrop.CropPlan.from_json reads it).")
flags.DEFINE_float("latency", None, "--mode=crop: budget on predicted latency, a ratio of the dense "
                   "model's (needs --latency_model).")
flags.DEFINE_string("latency_model", None, "JSON of a tf_precrop.LatencyModel of the target device "
                    "(tf_precrop.export.calibrate_latency(...).latency_model.to_json()); with it alone the "
                    "plan also reports the predicted latency.")

flags.register_validator(
    "input_shape",
    lambda v: v is None or (len(v) == 3 and all(s.isdigit() and int(s) > 0 for s in v)),
    message="--input_shape must be three positive integers, e.g. --input_shape=224,224,3")


def main(argv):
    del argv
    if FLAGS.mode == "crop" and FLAGS.flops is None and FLAGS.params is None and FLAGS.latency is None:
        raise app.UsageError("--mode=crop needs a budget: pass --flops, --params and/or --latency.")
    if FLAGS.mode == "preconfig" and FLAGS.latency is not None:
        raise app.UsageError(f"--latency works with --mode=crop only. Received: --latency={FLAGS.latency:g}")
    latency_model = apps.load_latency_model(FLAGS.latency_model) if FLAGS.latency_model else None
    if FLAGS.mode == "crop" and (FLAGS.flops or 0) > 1:
        raise app.UsageError("--flops must be in (0, 1] with --mode=crop (it only shrinks); use "
                             f"--mode=preconfig to let layers grow. Received: --flops={FLAGS.flops:g}")
    if FLAGS.model_path:
        model = keras.saving.load_model(FLAGS.model_path)
    else:
        input_shape = tuple(int(s) for s in FLAGS.input_shape) if FLAGS.input_shape else None
        model = common.build_model(FLAGS.model, input_shape, FLAGS.num_classes, FLAGS.width)
    ignored = tuple(FLAGS.ignored_layers)
    start = time.perf_counter()
    if FLAGS.mode == "preconfig":
        flops = 1.0 if FLAGS.flops is None else FLAGS.flops
        plan = tf_precrop.preconfig_plan(model, flops=flops, params=FLAGS.params,
                                         max_ratio=FLAGS.max_ratio, round_to=FLAGS.round_to,
                                         ignored_layers=ignored)
    else:
        flops = FLAGS.flops
        plan = tf_precrop.plan(model, flops=flops, params=FLAGS.params, round_to=FLAGS.round_to,
                               ignored_layers=ignored, latency=FLAGS.latency, latency_model=latency_model)
    seconds = time.perf_counter() - start
    print(plan.summary())
    print(summary_line(model.name, plan, seconds))

    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            f.write(plan.to_json())
        print(f"Wrote plan to {FLAGS.json}")
    if FLAGS.plot:
        label = "PreConfig" if FLAGS.mode == "preconfig" else "PreCrop"
        budget = ", ".join(f"{k}={v:g}" for k, v in plan.budgets.items() if v is not None)
        tf_precrop.report.plot_widths({f"{label} {budget}": plan}, FLAGS.plot)
        print(f"Wrote width plot to {FLAGS.plot}")
    if FLAGS.save:
        tf_precrop.crop(model, plan=plan, seed=FLAGS.seed).save(FLAGS.save)
        print(f"Wrote model to {FLAGS.save}")


def summary_line(name, plan, seconds):
    """One-line result: dense vs planned MACs and params, achieved ratios, time.

    Args:
        name: model name.
        plan: a `tf_precrop.CropPlan`.
        seconds: planning time.

    Returns:
        e.g. "resnet50: MACs 4.09G -> 2.04G (0.499x), params 25.6M -> 13.1M (0.511x),
        planned in 0.42 s (geometric program 0.12 s)".
    """
    latency = ("" if plan.latency_ratio is None else
               f"predicted latency {plan.dense_latency_ms:.3g} ms -> {plan.latency_ms:.3g} ms "
               f"({plan.latency_ratio:.3f}x), ")
    return (f"{name}: MACs {_si(plan.dense_macs)} -> {_si(plan.macs)} ({plan.macs_ratio:.3f}x), "
            f"params {_si(plan.dense_params)} -> {_si(plan.params)} ({plan.params_ratio:.3f}x), {latency}"
            f"planned in {seconds:.2f} s (geometric program {plan.solve_seconds:.2f} s)")


def _si(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


if __name__ == "__main__":
    app.run(main)
