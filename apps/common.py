"""Flags and helpers shared by `apps.crop` and `apps.train`.

The shared flags are defined here, once, so that both apps can be imported in
one process (absl flags are global). `apps.compare` defines its own grid flags
and never imports this module.
"""

import contextlib
import glob
import json
import math
import os
import time

from absl import flags
import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

import tf_precrop
from tf_precrop import models

FLAGS = flags.FLAGS

_WIDTH_MODELS = ("resnet20", "resnet32", "resnet56")

flags.DEFINE_string("model", "resnet20", "Model name: any keras.applications model "
                    "(case-insensitive, '_'/'-' ignored, e.g. resnet50, mobilenet_v2) or a "
                    "bundled one (resnet20, resnet32, resnet56, mobilenet_v2_cifar).")
flags.DEFINE_integer("width", None, "First-stage filters of a bundled CIFAR ResNet "
                     "(resnet20/32/56; default 16); other models refuse it.",
                     lower_bound=1)
flags.DEFINE_float("flops", None, "MACs budget as a ratio of the dense model's MACs "
                   "(FLOPs = 2 x MACs, so the ratio is the same). precrop/uniform_width/sparse "
                   "methods: in (0, 1]; preconfig: > 0, default 1.0.")
flags.DEFINE_float("params", None, "Parameter budget as a ratio of the dense model's params.")
flags.DEFINE_integer("round_to", 1, "Round every cropped width to a multiple of this "
                     "(8 suits oneDNN/XNNPack).", lower_bound=1)
flags.DEFINE_float("max_ratio", 2.0, "preconfig: largest width ratio a layer group may grow "
                   "to (u in docs/method.md, PreConfig).")
flags.DEFINE_integer("seed", 0, "Random seed (initialisation, data order, augmentation, masks).")

flags.register_validator(
    "flops", lambda v: v is None or v > 0,
    message="--flops must be a positive ratio of the dense MACs")
flags.register_validator(
    "params", lambda v: v is None or v > 0,
    message="--params must be a positive ratio of the dense params")
flags.register_validator(
    "max_ratio", lambda v: v >= 1.0, message="--max_ratio must be >= 1.0")
flags.register_validator(
    "model", lambda v: models.canonical_name(v) is not None,
    message=f"--model must name a known model (case-insensitive, '_'/'-' ignored): {', '.join(models.names())}")


def build_model(name, input_shape=None, num_classes=None, width=None):
    """Builds a freshly initialised model by name (no pretrained weights, offline).

    Args:
        name: a name accepted by `tf_precrop.models.build`.
        input_shape: (height, width, channels) or None for the model's default.
        num_classes: number of classes or None for the model's default.
        width: first-stage filters of a bundled CIFAR ResNet; None keeps the default.

    Returns:
        A Keras 3 model.

    Raises:
        ValueError: if the name is unknown, or `width` is given for a model
            other than resnet20/32/56.

    Example:
        >>> build_model("resnet20", (28, 28, 1), 10, width=8).count_params()
    """
    if width is None:
        return models.build(name, input_shape=input_shape, num_classes=num_classes)
    key = models.canonical_name(name)
    if key not in _WIDTH_MODELS:
        raise ValueError(f"--width applies to {', '.join(_WIDTH_MODELS)} only. "
                         f"Received: model={name!r}, width={width}")
    kwargs = {k: v for k, v in (("input_shape", input_shape), ("num_classes", num_classes))
              if v is not None}
    return getattr(models, key)(width=width, **kwargs)


def resize(method, model, *, flops=None, params=None, round_to=1, max_ratio=2.0, seed=None):
    """Returns the model a structured method trains: one `tf_precrop` call.

    Args:
        method: "dense", "precrop", "preconfig" or "uniform_width".
        model: the dense Keras 3 model (not modified).
        flops: MACs budget ratio (preconfig defaults to 1.0).
        params: parameter budget ratio.
        round_to: width multiple.
        max_ratio: preconfig's largest growth ratio.
        seed: initialisation seed of the new model.

    Returns:
        A new Keras 3 model (`model` itself for "dense").

    Example:
        >>> small = resize("precrop", model, flops=0.5, round_to=8)
    """
    if method == "dense":
        return model
    if method == "preconfig":
        return tf_precrop.preconfig(model, flops=1.0 if flops is None else flops, params=params,
                                    max_ratio=max_ratio, round_to=round_to, seed=seed)
    return tf_precrop.crop(model, flops=flops, params=params, round_to=round_to,
                           uniform=method == "uniform_width", seed=seed)


#: Why --distribution=multi_worker is refused (docs/apps.md, "Distributed training").
MULTI_WORKER_UNSUPPORTED = (
    "--distribution=multi_worker is not supported: Keras 3 `fit` under tf.distribute.MultiWorkerMirroredStrategy "
    "fails in Keras itself (\"Attempt to convert a value (PerReplica...)\", an open Keras 3 bug). Train on one "
    "machine's devices with --distribution=mirrored (TensorFlow) or --distribution=data_parallel "
    "(KERAS_BACKEND=jax); see docs/apps.md.")


class DataParallel:
    """`keras.distribution.DataParallel` over every local device, with the two members of a
    `tf.distribute.Strategy` that apps.train uses (`scope()`, `num_replicas_in_sync`).

    Keras distributes variables and batches itself once the distribution is set (JAX backend only), so
    `scope()` has nothing to enter.
    """

    def __init__(self):
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        self.num_replicas_in_sync = len(devices)

    def scope(self):
        return contextlib.nullcontext()


def distribution_strategy(name):
    """Returns the distribution named by `--distribution`.

    Args:
        name: "default" (no distribution), "mirrored" (tf.distribute.MirroredStrategy over all local
            devices, TensorFlow backend), "data_parallel" (keras.distribution.DataParallel over all local
            devices, JAX backend) or "multi_worker" (refused: see `MULTI_WORKER_UNSUPPORTED`).

    Returns:
        A `tf.distribute.Strategy`, or a `DataParallel`.

    Raises:
        ValueError: for "multi_worker", and for "data_parallel" on a backend other than JAX.

    Example:
        >>> with distribution_strategy("mirrored").scope():
        ...     model = build_model("resnet20")
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        raise ValueError(MULTI_WORKER_UNSUPPORTED)
    if name == "data_parallel":
        if keras.backend.backend() != "jax":
            raise ValueError("--distribution=data_parallel needs the JAX backend (keras.distribution supports "
                             "JAX only): set KERAS_BACKEND=jax, or use --distribution=mirrored on TensorFlow. "
                             f"Received: backend {keras.backend.backend()!r}")
        return DataParallel()
    return tf.distribute.get_strategy()


def learning_rate(step, total_steps, base_lr, schedule):
    """Learning rate at a training step.

    Args:
        step: 0-based global step.
        total_steps: number of training steps of the run.
        base_lr: initial learning rate.
        schedule: "cosine" (decays to 0 at the last step) or "step" (x0.1 at 50%
            and again at 75% of the steps, the CIFAR recipe's 60/120-of-160 shape).

    Returns:
        The learning rate (float).

    Example:
        >>> learning_rate(50, 100, 0.1, "cosine")
        0.05
    """
    progress = min(step / max(total_steps, 1), 1.0)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))


class TrainMonitor(keras.callbacks.Callback):
    """Sets the learning rate, times training steps, logs to TensorBoard, checkpoints.

    Works with Keras 3 and tf_keras models alike (the sparse methods train a
    tf_keras model through TF-MOT), so it only uses what both share: the
    optimizer's `learning_rate` setter, `tf.summary` and `tf.train.Checkpoint`.

    Attributes:
        step_times: seconds per training batch, the first (tracing) batch excluded.
    """

    def __init__(self, *, total_steps, base_lr, schedule, log_dir, checkpoint_dir):
        super().__init__()
        self._total_steps = total_steps
        self._base_lr = base_lr
        self._schedule = schedule
        self._writer = tf.summary.create_file_writer(log_dir)
        self._checkpoint_dir = checkpoint_dir
        self._manager = None
        self._step = 0
        self._start = None
        self.step_times = []

    # tf_keras's CallbackList asks every callback which batch hooks it implements.
    def _implements_train_batch_hooks(self):
        return True

    def _implements_test_batch_hooks(self):
        return False

    def _implements_predict_batch_hooks(self):
        return False

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = learning_rate(
            self._step, self._total_steps, self._base_lr, self._schedule)
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._step > 0:
            self.step_times.append(time.perf_counter() - self._start)
        self._step += 1

    def on_epoch_end(self, epoch, logs=None):
        with self._writer.as_default(step=epoch):
            for key, value in (logs or {}).items():
                _scalar(key if key.startswith("val_") else f"train_{key}", value)
            _scalar("learning_rate", learning_rate(
                self._step, self._total_steps, self._base_lr, self._schedule))
            if self.step_times:
                _scalar("step_time_ms", 1e3 * sum(self.step_times) / len(self.step_times))
        self._writer.flush()
        if isinstance(self.model, keras.Model) and keras.backend.backend() != "tensorflow":
            # A Keras 3 model on JAX (or torch) is not a TensorFlow trackable: keep its weights file instead.
            os.makedirs(self._checkpoint_dir, exist_ok=True)
            for old in glob.glob(os.path.join(self._checkpoint_dir, "*.weights.h5")):
                os.remove(old)
            self.model.save_weights(os.path.join(self._checkpoint_dir, f"ckpt-{epoch + 1}.weights.h5"))
            return
        if self._manager is None:
            checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
            self._manager = tf.train.CheckpointManager(checkpoint, self._checkpoint_dir, 1)
        self._manager.save(checkpoint_number=epoch + 1)


def _scalar(tag, value):
    """`tf.summary.scalar` without the tensorboard package (which provides that op).

    Writes the same event TensorBoard's scalar plugin reads.
    """
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)
    tf.summary.write(tag, tf.constant(float(value), tf.float32), metadata=metadata)


def write_json(path, obj):
    """Writes `obj` as indented JSON, creating the directory.

    Args:
        path: output file.
        obj: JSON-serialisable object.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
