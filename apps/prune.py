r"""Prunes a trained model to a budget, keeping the weights of the surviving channels.

Widths come from the PreCrop geometric program (or one shared ratio with
`--uniform`, or a plan written by `apps.crop --json`); group importance picks which
channels survive (see docs/method.md, "Pruning a trained model"). Fine-tune the
result with `apps.train --init_from=pruned.keras`, optionally distilling from the
dense model with `--teacher=trained.keras`.

Usage:
    python -m apps.prune --model_path=trained.keras --flops=0.5 --importance=l1 \
        --round_to=8 --save=pruned.keras
    python -m apps.prune --model_path=trained.keras --plan_json=plan.json --importance=bn \
        --save=pruned.keras

Prints the plan table, the fraction of importance mass each pruned group kept, and a
one-line summary.
"""

from absl import app
from absl import flags
import keras

import tf_precrop
from apps import common  # noqa: F401  (--flops, --params, --round_to, --seed)
from apps import model_flags  # noqa: F401  (--model_path, --ignored_layers, --save)

FLAGS = flags.FLAGS

flags.DEFINE_enum("importance", "l1", ["l1", "l2", "bn", "random"],
                  "Channel importance: kernel L1 / squared L2 norms, BatchNormalization |gamma|, "
                  "or random (the control). 'taylor' needs data: use tf_precrop.prune in Python.")
flags.DEFINE_enum("reduction", "sum", ["sum", "mean"], "How a channel's slices combine over its group.")
flags.DEFINE_bool("uniform", False, "One shared width ratio for every group (instead of PreCrop's allocation).")
flags.DEFINE_string("plan_json", None, "Apply this plan (apps.crop --json / CropPlan.to_json) instead of "
                    "solving for --flops/--params.")


def main(argv):
    del argv
    if not FLAGS.model_path:
        raise app.UsageError("--model_path is required: the trained .keras model to prune.")
    if FLAGS.plan_json and (FLAGS.flops is not None or FLAGS.params is not None or FLAGS.uniform):
        raise app.UsageError("--plan_json fixes the widths: pass it without --flops, --params and --uniform. "
                             f"Received: --plan_json={FLAGS.plan_json} --flops={FLAGS.flops} "
                             f"--params={FLAGS.params} --uniform={FLAGS.uniform}")
    if not FLAGS.plan_json and FLAGS.flops is None and FLAGS.params is None:
        raise app.UsageError("apps.prune needs a budget: pass --flops and/or --params, or --plan_json.")
    if (FLAGS.flops or 0) > 1 or (FLAGS.params or 0) > 1:
        raise app.UsageError(f"--flops and --params must be in (0, 1]. Received: --flops={FLAGS.flops} "
                             f"--params={FLAGS.params}")
    model = keras.saving.load_model(FLAGS.model_path)
    plan = None
    if FLAGS.plan_json:
        try:
            with open(FLAGS.plan_json) as f:
                plan = tf_precrop.CropPlan.from_json(f.read())
        except (OSError, ValueError) as err:
            raise app.UsageError(f"--plan_json: {err}. Received: --plan_json={FLAGS.plan_json}")
    pruned, report = tf_precrop.prune(
        model, plan, flops=FLAGS.flops, params=FLAGS.params, round_to=FLAGS.round_to,
        ignored_layers=tuple(FLAGS.ignored_layers), uniform=FLAGS.uniform, importance=FLAGS.importance,
        reduction=FLAGS.reduction, seed=FLAGS.seed, return_report=True)
    print(report.summary())
    print(summary_line(model.name, report))
    if FLAGS.save:
        pruned.save(FLAGS.save)
        print(f"Wrote model to {FLAGS.save}")


def summary_line(name, report):
    """One line: MACs and params before -> after, and the importance mass kept over the pruned groups.

    Args:
        name: model name.
        report: the ``tf_precrop.PruneReport``.

    Returns:
        e.g. "resnet20: MACs 41.2M -> 20.5M (0.498x), params 272K -> 135K (0.497x), importance kept per
        pruned group: min 0.612, median 0.704 (importance=l1)".
    """
    plan = report.plan
    kept = sorted(g.kept_importance for g in report.groups if g.kept_importance is not None)
    mass = (f"min {kept[0]:.3f}, median {kept[len(kept) // 2]:.3f}" if kept else "no pruned group")
    return (f"{name}: MACs {plan.dense_macs:,} -> {plan.macs:,} ({plan.macs_ratio:.3f}x), params "
            f"{plan.dense_params:,} -> {plan.params:,} ({plan.params_ratio:.3f}x), importance kept per pruned "
            f"group: {mass} (importance={report.importance})")


if __name__ == "__main__":
    app.run(main)
