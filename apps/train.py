r"""Trains a dense, cropped, re-configured or pruned-at-init model on a tfds dataset.

Usage:
    python -m apps.train --model=resnet20 --dataset=fashion_mnist --method=precrop \
        --flops=0.5 --round_to=8 --epochs=30 --model_dir=runs/precrop_0.5

Methods:
    dense          the unmodified model.
    precrop        tf_precrop.crop: channel widths solved for the budget (PreCrop).
    preconfig      tf_precrop.preconfig: widths redistributed, layers may grow
                   (--flops defaults to 1.0, the dense cost).
    uniform_width  one shared width ratio for every group, solved to the same budget.
    synflow, snip, grasp, magnitude, random, erk, optimal, synflow_random
                   unstructured masks at initialisation (tf_precrop.sparsity),
                   trained with TF-MOT (tf_keras) and its pruning callbacks.
    masks          unstructured masks read from --masks (an .npz keyed
                   "layer/kernel_attr"), trained like the methods above.

Fine-tuning a pruned model (see apps.prune):
    python -m apps.train --init_from=pruned.keras --teacher=trained.keras \
        --distill_alpha=0.5 --temperature=4 --epochs=3 --lr=0.01 --model_dir=runs/ft
    --init_from trains a saved model (its weights kept) instead of building --model;
    --teacher distills from a trained model (tf_precrop.Distiller, a keras.Model).

Recipe: SGD, momentum 0.9 (Nesterov), cosine or step learning-rate schedule,
optional decoupled weight decay, the dataset's standard augmentation.

Writes to --model_dir: TensorBoard logs (logs/), the last checkpoint
(checkpoints/, tf.train.Checkpoint of model and optimizer) and results.json
(test accuracy, params, MACs (effective and, for masked methods, dense-executed),
mean training step time, wall time, flags).
"""

import os
import time

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np

import apps
from apps import common
import tf_precrop
from tf_precrop import data
from tf_precrop import sparsity

FLAGS = flags.FLAGS
# List the shared flags of apps/common.py (--model, --flops, ...) under --help, not only --helpfull.
flags.adopt_module_key_flags(common)

flags.DEFINE_enum("method", "dense", apps.METHODS, "What to train (see the module docstring).")
flags.DEFINE_enum("dataset", "fashion_mnist", sorted(data.SUPPORTED), "tfds dataset.")
flags.DEFINE_string("masks", None, "--method=masks: .npz of 0/1 masks keyed 'layer/kernel_attr'.")
flags.DEFINE_integer("epochs", 10, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Global batch size.", lower_bound=1)
flags.DEFINE_float("lr", 0.1, "Initial learning rate.", lower_bound=0.0)
flags.DEFINE_enum("schedule", "cosine", ["cosine", "step"],
                  "cosine: to 0 at the end; step: x0.1 at 50% and 75% of training.")
flags.DEFINE_float("weight_decay", 5e-4, "Decoupled weight decay of the SGD optimizer.",
                   lower_bound=0.0)
flags.DEFINE_string("data_dir", None, "tfds data directory (default: tfds's).")
flags.DEFINE_string("model_dir", "runs/train", "Output directory: logs/, checkpoints/, results.json.")
flags.DEFINE_integer("train_take", None, "Use only the first N training examples.", lower_bound=1)
flags.DEFINE_integer("test_take", None, "Use only the first N test examples.", lower_bound=1)
flags.DEFINE_integer("validation_freq", 1, "Evaluate on the test split every N epochs during "
                     "training (0: only once at the end).", lower_bound=0)
flags.DEFINE_enum("distribution", "default", ["default", "mirrored", "data_parallel", "multi_worker"],
                  "default: one device; mirrored: tf.distribute.MirroredStrategy over the local devices "
                  "(TensorFlow backend); data_parallel: keras.distribution.DataParallel over the local devices "
                  "(KERAS_BACKEND=jax, structured methods); multi_worker: refused, Keras 3 fit fails under "
                  "MultiWorkerMirroredStrategy (docs/apps.md).")
flags.DEFINE_string("init_from", None, "Train this saved .keras model (e.g. from apps.prune), weights "
                    "kept, instead of building --model (with --method=dense).")
flags.DEFINE_string("teacher", None, "Distill from this trained .keras model (structured methods): "
                    "loss = (1 - alpha) * task + alpha * T^2 * KL(teacher_T || student_T).")
flags.DEFINE_float("distill_alpha", 0.5, "--teacher: weight of the distillation term.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("temperature", 4.0, "--teacher: softening temperature T.", lower_bound=1e-6)
flags.DEFINE_string("save_model", None, "Write the trained model (the student with --teacher) to this "
                    ".keras file (structured methods; e.g. to prune it with apps.prune).")
flags.DEFINE_integer("verbose", 1, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line "
                     "per epoch.", lower_bound=0, upper_bound=2)


def check_flags():
    """Checks the flag combinations (single flags are checked when parsed).

    Raises:
        app.UsageError: quoting the offending flags.
    """
    if FLAGS.method != "preconfig" and FLAGS.flops is not None and FLAGS.flops > 1:
        raise app.UsageError(
            "--flops must be in (0, 1] unless --method=preconfig (the other methods only "
            f"shrink). Received: --method={FLAGS.method} --flops={FLAGS.flops:g}")
    if (FLAGS.method not in ("dense", "preconfig", "masks") and FLAGS.flops is None
            and FLAGS.params is None):
        raise app.UsageError(f"--method={FLAGS.method} needs a budget: pass --flops and/or --params.")
    if FLAGS.init_from and FLAGS.method != "dense":
        raise app.UsageError("--init_from trains the saved model as it is: use it with --method=dense. "
                             f"Received: --method={FLAGS.method} --init_from={FLAGS.init_from}")
    if FLAGS.save_model and FLAGS.method not in apps.STRUCTURED_METHODS:
        raise app.UsageError("--save_model writes Keras 3 models: use it with the structured methods "
                             f"{list(apps.STRUCTURED_METHODS)}. Received: --method={FLAGS.method}")
    if FLAGS.teacher and FLAGS.method not in apps.STRUCTURED_METHODS:
        raise app.UsageError("--teacher works with the Keras 3 (structured) methods "
                             f"{list(apps.STRUCTURED_METHODS)}. Received: --method={FLAGS.method}")
    if FLAGS.distribution == "multi_worker":
        raise app.UsageError(common.MULTI_WORKER_UNSUPPORTED)
    if FLAGS.distribution == "data_parallel" and keras.backend.backend() != "jax":
        raise app.UsageError("--distribution=data_parallel needs the JAX backend (keras.distribution supports "
                             f"JAX only): run with KERAS_BACKEND=jax. Received: backend {keras.backend.backend()!r}")
    if FLAGS.distribution == "data_parallel" and FLAGS.method not in apps.STRUCTURED_METHODS:
        raise app.UsageError("--distribution=data_parallel trains Keras 3 models only (the structured methods "
                             f"{', '.join(apps.STRUCTURED_METHODS)}); the sparse methods train a tf_keras model "
                             f"through TF-MOT. Received: --method={FLAGS.method}")
    if (FLAGS.method == "masks") != (FLAGS.masks is not None):
        raise app.UsageError("--masks goes with --method=masks, and --method=masks needs --masks. "
                             f"Received: --method={FLAGS.method} --masks={FLAGS.masks}")


def main(argv):
    del argv
    check_flags()
    start = time.perf_counter()
    if not FLAGS["verbosity"].present:  # tfds and checkpoint INFO lines would drown the progress bar
        logging.set_verbosity(logging.WARNING)
    strategy = common.distribution_strategy(FLAGS.distribution)
    info = data.info(FLAGS.dataset)
    train_ds = data.load(FLAGS.dataset, info.train_split, FLAGS.batch_size, augment=True,
                         data_dir=FLAGS.data_dir, take=FLAGS.train_take, seed=FLAGS.seed)
    test_ds = data.load(FLAGS.dataset, info.test_split, FLAGS.batch_size,
                        data_dir=FLAGS.data_dir, take=FLAGS.test_take)
    steps_per_epoch = _num_batches(train_ds)

    keras.utils.set_random_seed(FLAGS.seed)
    dense = common.build_model(FLAGS.model, info.input_shape, info.num_classes, FLAGS.width)
    dense_cost = tf_precrop.count(dense)
    with strategy.scope():
        if FLAGS.init_from:
            model = keras.saving.load_model(FLAGS.init_from)
            cost = tf_precrop.count(model)
            costs = {"macs": cost.macs, "params": cost.params,
                     "executed_macs": cost.macs, "executed_params": cost.params}
            callbacks = []
        elif FLAGS.method in apps.STRUCTURED_METHODS:
            model = common.resize(FLAGS.method, dense, flops=FLAGS.flops, params=FLAGS.params,
                                  round_to=FLAGS.round_to, max_ratio=FLAGS.max_ratio,
                                  seed=FLAGS.seed)
            cost = tf_precrop.count(model)
            costs = {"macs": cost.macs, "params": cost.params,
                     "executed_macs": cost.macs, "executed_params": cost.params}
            callbacks = []
        else:
            masks = _masks(dense, train_ds)
            masked = sparsity.masked_cost(dense, masks)
            model = sparsity.to_tfmot(dense, masks)
            costs = {"macs": masked["macs"], "params": masked["params"],
                     "executed_macs": dense_cost.macs, "executed_params": dense_cost.params}
            callbacks = list(sparsity.callbacks())
        if FLAGS.teacher:
            teacher = keras.saving.load_model(FLAGS.teacher)
            dense_cost = tf_precrop.count(teacher)  # the dense reference is the teacher
            model = tf_precrop.Distiller(model, teacher, alpha=FLAGS.distill_alpha,
                                         temperature=FLAGS.temperature)
        _compile(model)

    monitor = common.TrainMonitor(
        total_steps=FLAGS.epochs * steps_per_epoch, base_lr=FLAGS.lr, schedule=FLAGS.schedule,
        log_dir=os.path.join(FLAGS.model_dir, "logs"),
        checkpoint_dir=os.path.join(FLAGS.model_dir, "checkpoints"))
    validation = {"validation_data": test_ds, "validation_freq": FLAGS.validation_freq} \
        if FLAGS.validation_freq else {}
    train_start = time.perf_counter()
    model.fit(train_ds, epochs=FLAGS.epochs, callbacks=[monitor, *callbacks],
              verbose=FLAGS.verbose, **validation)
    train_seconds = time.perf_counter() - train_start
    if FLAGS.teacher:  # evaluate the student on the task loss alone
        model = model.student
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)
    if FLAGS.save_model:
        model.save(FLAGS.save_model)

    step_times = monitor.step_times
    results = {
        "model": FLAGS.model, "method": FLAGS.method, "dataset": FLAGS.dataset,
        "seed": FLAGS.seed, "flops_budget": FLAGS.flops, "params_budget": FLAGS.params,
        "test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
        "dense_macs": dense_cost.macs, "dense_params": dense_cost.params, **costs,
        "macs_ratio": costs["macs"] / dense_cost.macs,
        "params_ratio": costs["params"] / dense_cost.params,
        "step_time_mean_s": float(np.mean(step_times)) if step_times else None,
        "step_time_median_s": float(np.median(step_times)) if step_times else None,
        "steps_timed": len(step_times), "steps_per_epoch": steps_per_epoch,
        "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - start,
        "replicas": strategy.num_replicas_in_sync,
        "flags": {name: FLAGS[name].value for name in _own_flags()},
    }
    common.write_json(os.path.join(FLAGS.model_dir, "results.json"), results)
    print(f"{FLAGS.method}: test accuracy {test_accuracy:.4f}, MACs {costs['macs']:,} "
          f"({results['macs_ratio']:.3f}x dense), params {costs['params']:,}, "
          f"{1e3 * (results['step_time_mean_s'] or 0):.1f} ms/step; "
          f"wrote {os.path.join(FLAGS.model_dir, 'results.json')}")


def _masks(dense, train_ds):
    """Masks of a sparse method (one sparsity call) or read from --masks."""
    if FLAGS.method == "masks":
        with np.load(FLAGS.masks) as f:
            return {key: f[key] for key in f.files}
    batches = None
    if FLAGS.method in ("snip", "grasp"):
        batches = [(x.numpy(), y.numpy()) for x, y in train_ds.take(1)]
    return sparsity.compute_masks(FLAGS.method, dense, flops=FLAGS.flops, params=FLAGS.params,
                                  seed=FLAGS.seed, batches=batches)


def _compile(model):
    """Compiles with SGD + Nesterov momentum of the model's own framework.

    The sparse methods train a tf_keras model, the others a Keras 3 model; the
    SGD class is taken from a first `compile(optimizer="sgd")` so that this
    module imports neither framework's optimizer. The learning rate is set every
    step by `common.TrainMonitor`.
    """
    model.compile(optimizer="sgd")
    sgd = type(model.optimizer)(learning_rate=FLAGS.lr, momentum=0.9, nesterov=True,
                                weight_decay=FLAGS.weight_decay or None)
    model.compile(optimizer=sgd, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _num_batches(ds):
    cardinality = int(ds.cardinality())
    return cardinality if cardinality > 0 else sum(1 for _ in ds)


def _own_flags():
    """Names of the flags this app and apps.common define (not absl's own)."""
    return sorted(f.name for module in (__name__, common.__name__)
                  for f in FLAGS.get_flags_for_module(module))


if __name__ == "__main__":
    app.run(main)
