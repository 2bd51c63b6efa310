r"""tf_precrop.prune on keras.applications families: dead channels go, the function stays.

For each model (random weights, small input, logits output): plan at --flops with
--round_to, make the channels a random selection would remove *dead* (zero every weight
slice that holds them; BatchNormalization moving statistics are left as they are), prune
with importance="l1", and compare the outputs on two random images. A correct weight
mapping removes exactly the dead channels and keeps the function (up to float rounding);
a wrong one changes it. Models with LayerNormalization (ConvNeXt) only stay exact when the
normalized groups keep their width.

Usage (from the repository root):
    python -m benchmarks.prune_exactness                       # every model below
    python -m benchmarks.prune_exactness --models=VGG16,MobileNet

Writes benchmarks/results/prune_exactness.md.
"""

import os
import time

from absl import app
from absl import flags
import keras
import numpy as np

import tf_precrop
from tf_precrop.graph.walker import ModelGraph
from tf_precrop.prune import mapping
from tf_precrop.prune import selection

FLAGS = flags.FLAGS

# (name, input size): the smallest input each family accepts, to keep the run short.
MODELS = [("MobileNet", 32), ("MobileNetV3Small", 32), ("EfficientNetB0", 32), ("EfficientNetV2B0", 32),
          ("DenseNet121", 32), ("ConvNeXtTiny", 32), ("VGG16", 32), ("ResNet50V2", 32), ("Xception", 71),
          ("InceptionV3", 75), ("InceptionResNetV2", 75), ("NASNetMobile", 32)]

flags.DEFINE_list("models", [name for name, _ in MODELS], "keras.applications classes to check.")
flags.DEFINE_float("flops", 0.5, "MACs budget of the plan.")
flags.DEFINE_integer("round_to", 8, "Width multiple of the plan.")
flags.DEFINE_string("out", "benchmarks/results/prune_exactness.md", "Markdown summary.")


def kill_removed_channels(model, plan, seed=0):
    """Zeroes every weight slice of the channels a random selection removes (BN statistics kept)."""
    cmap = mapping.ChannelMap(model, ModelGraph(model))
    keep = selection.select(cmap, plan, np.random.default_rng(seed).random(cmap.num_classes))
    dead = ~keep[cmap.class_of]
    for spec in cmap.weights:
        value = spec.variable.numpy()
        if spec.name in ("moving_mean", "moving_variance") or not np.issubdtype(value.dtype, np.floating):
            continue
        for axis, ids in enumerate(spec.axes):
            if ids is None:
                continue
            if spec.groups > 1 and axis == value.ndim - 2:
                per_block = value.shape[-1] // spec.groups
                for i in np.flatnonzero(dead[ids]):
                    row, block = i % value.shape[-2], i // value.shape[-2]
                    value[..., row, block * per_block:(block + 1) * per_block] = 0
            else:
                index = [slice(None)] * value.ndim
                index[axis] = dead[ids]
                value[tuple(index)] = 0
        spec.variable.assign(value)


def check(name, size):
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    kwargs = {"include_preprocessing": True} if name.startswith(("MobileNetV3", "EfficientNetV2")) else {}
    model = getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None, classes=4,
                                              classifier_activation=None, **kwargs)
    plan = tf_precrop.plan(model, flops=FLAGS.flops, round_to=FLAGS.round_to)
    kill_removed_channels(model, plan)
    x = np.random.default_rng(1).uniform(0, 255, size=(2, size, size, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    prune_start = time.perf_counter()
    pruned = tf_precrop.prune(model, plan, importance="l1")
    prune_seconds = time.perf_counter() - prune_start
    got = pruned.predict(x, verbose=0)
    scale = float(np.abs(expected).max())
    return {"model": name, "input": size, "macs_ratio": plan.macs_ratio,
            "params": f"{model.count_params():,} -> {pruned.count_params():,}",
            "max_diff": float(np.abs(got - expected).max()), "scale": scale,
            "prune_seconds": prune_seconds, "seconds": time.perf_counter() - start}


def main(argv):
    del argv
    sizes = dict(MODELS)
    rows = []
    for name in FLAGS.models:
        try:
            row = check(name, sizes.get(name, 32))
        except Exception as err:  # noqa: BLE001  (report every model, then the failures)
            row = {"model": name, "error": f"{type(err).__name__}: {str(err)[:200]}"}
        print(row, flush=True)
        rows.append(row)
    lines = ["# tf_precrop.prune: dead channels go, the function stays", "",
             f"Command: `python -m benchmarks.prune_exactness` (flops={FLAGS.flops:g}, round_to={FLAGS.round_to}). "
             "Random weights; the channels a random selection removes are made dead (every slice zero, BN "
             "moving statistics untouched); `prune(importance='l1')` must remove exactly them. `max |diff|` is "
             "over the logits of two random images, `scale` is max |logit| (random deep nets shrink their "
             "logits; the relative difference is what a float32 rounding or a wrong mapping shows in).", "",
             "| model | input | MACs ratio | params | max \\|diff\\| | scale | relative | prune (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | | | failed: {r['error']} | | | |")
        else:
            lines.append(f"| {r['model']} | {r['input']} | {r['macs_ratio']:.3f} | {r['params']} | "
                         f"{r['max_diff']:.2e} | {r['scale']:.2e} | {r['max_diff'] / r['scale']:.1e} | "
                         f"{r['prune_seconds']:.1f} |")
    os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
    with open(FLAGS.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"Wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
