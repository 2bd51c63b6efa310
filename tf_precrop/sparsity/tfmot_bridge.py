"""TF-MOT arm: a tf_keras twin of a Keras 3 model with fixed pruning masks.

This is the only module of tf_precrop that touches ``tf_keras`` and
``tensorflow_model_optimization``, and it imports them lazily, inside the
functions that need them. Importing TF-MOT sets ``TF_USE_LEGACY_KERAS=1`` in
``os.environ`` (so that ``tf.keras`` becomes tf_keras in this process and in
every child process); the previous value is restored right after the import,
and :func:`clean_env` gives a child-process environment without it.

The twin is rebuilt layer by layer: each Keras 3 layer config is translated
(dtype policy dict to its name, serialized initializers/regularizers/
constraints to tf_keras objects, keys tf_keras does not know dropped) and
passed to ``getattr(tf_keras.layers, class_name).from_config``; nested
Functional/Sequential sub-models are rebuilt as nested tf_keras models with
the same names, the weights are copied, and the twin's output is checked
against the Keras 3 model. ConvNeXt's ``LayerScale`` and InceptionResNetV2's
``CustomScaleLayer`` get tf_keras twins.

Prunable layers are wrapped with ``tfmot.sparsity.keras.prune_low_magnitude``
under a schedule that never fires (``ConstantSparsity(..., begin_step=10**9)``)
and the given masks are assigned to the wrappers' mask variables, so they stay
fixed during training. TF-MOT's registry prunes neither ``DepthwiseConv2D``
nor the depthwise kernel of ``SeparableConv2D``; those layers are built as
subclasses implementing ``tfmot.sparsity.keras.PrunableLayer``.
"""

import functools
import inspect
import os

import keras
import numpy as np

from tf_precrop import _extras
from tf_precrop.sparsity import prunable

_LEGACY = "TF_USE_LEGACY_KERAS"
_NEVER = 10**9


def clean_env():
    """A copy of ``os.environ`` without ``TF_USE_LEGACY_KERAS``.

    Use it as ``env=`` of child processes so that they get Keras 3 for
    ``tf.keras`` even after TF-MOT was imported in this process.

    Returns:
        A dict of environment variables.

    Example:
        >>> subprocess.run([sys.executable, "train.py"], env=sparsity.clean_env())
    """
    env = dict(os.environ)
    env.pop(_LEGACY, None)
    return env


@functools.lru_cache(maxsize=None)
def _modules():
    """Imports tf_keras and TF-MOT, restoring ``TF_USE_LEGACY_KERAS``."""
    before = os.environ.get(_LEGACY)
    try:
        tf_keras = _extras.require("tf_keras", "The TF-MOT arm (tf_precrop.sparsity.to_tfmot)")
        tfmot = _extras.require("tensorflow_model_optimization", "The TF-MOT arm (tf_precrop.sparsity.to_tfmot)")
    finally:
        if before is None:
            os.environ.pop(_LEGACY, None)
        else:
            os.environ[_LEGACY] = before
    return tf_keras, tfmot


@functools.lru_cache(maxsize=None)
def _custom_classes():
    """tf_keras twins of custom keras.applications layers and prunable subclasses."""
    tf_keras, tfmot = _modules()
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    class LayerScale(tf_keras.layers.Layer):
        """ConvNeXt's per-channel scale ``x * gamma``."""

        def __init__(self, init_values, projection_dim, **kwargs):
            super().__init__(**kwargs)
            self.init_values = init_values
            self.projection_dim = projection_dim

        def build(self, input_shape):
            self.gamma = self.add_weight(
                name="gamma",
                shape=(self.projection_dim,),
                initializer=tf_keras.initializers.Constant(self.init_values),
                trainable=True,
            )
            super().build(input_shape)

        def call(self, inputs):
            return inputs * tf.cast(self.gamma, inputs.dtype)

        def get_config(self):
            config = super().get_config()
            config.update(init_values=self.init_values, projection_dim=self.projection_dim)
            return config

    class CustomScaleLayer(tf_keras.layers.Layer):
        """InceptionResNetV2's ``x + scale * r``."""

        def __init__(self, scale, **kwargs):
            super().__init__(**kwargs)
            self.scale = scale

        def call(self, inputs):
            return inputs[0] + inputs[1] * self.scale

        def get_config(self):
            config = super().get_config()
            config.update(scale=self.scale)
            return config

    prunable_layer = tfmot.sparsity.keras.PrunableLayer

    class PrunableDepthwiseConv2D(tf_keras.layers.DepthwiseConv2D, prunable_layer):
        """DepthwiseConv2D whose depthwise kernel TF-MOT may prune."""

        def get_prunable_weights(self):
            return [self.depthwise_kernel]

    class PrunableDepthwiseConv1D(tf_keras.layers.DepthwiseConv1D, prunable_layer):
        """DepthwiseConv1D whose depthwise kernel TF-MOT may prune."""

        def get_prunable_weights(self):
            return [self.depthwise_kernel]

    class PrunableSeparableConv2D(tf_keras.layers.SeparableConv2D, prunable_layer):
        """SeparableConv2D with both kernels prunable."""

        def get_prunable_weights(self):
            return [self.depthwise_kernel, self.pointwise_kernel]

    class PrunableSeparableConv1D(tf_keras.layers.SeparableConv1D, prunable_layer):
        """SeparableConv1D with both kernels prunable."""

        def get_prunable_weights(self):
            return [self.depthwise_kernel, self.pointwise_kernel]

    custom = {"LayerScale": LayerScale, "CustomScaleLayer": CustomScaleLayer}
    wrapped = {
        "DepthwiseConv2D": PrunableDepthwiseConv2D,
        "DepthwiseConv1D": PrunableDepthwiseConv1D,
        "SeparableConv2D": PrunableSeparableConv2D,
        "SeparableConv1D": PrunableSeparableConv1D,
    }
    return custom, wrapped


# Keras 3 kernel attribute -> tf_keras attribute, per class.
_TF_KERAS_ATTR = {
    ("DepthwiseConv2D", "kernel"): "depthwise_kernel",
    ("DepthwiseConv1D", "kernel"): "depthwise_kernel",
}


def _translate(value):
    """Keras 3 serialized objects -> tf_keras objects (recursively)."""
    tf_keras, _ = _modules()
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        module = (value.get("module") or "").rsplit(".", 1)[-1]
        name = value["class_name"]
        cfg = value["config"]
        if name in ("DTypePolicy", "FloatDTypePolicy"):
            return cfg["name"]
        if module in ("initializers", "regularizers", "constraints"):
            cls = getattr(getattr(tf_keras, module), name)
            return cls(**{k: v for k, v in cfg.items() if k in _accepted(cls)})
    return value


def _accepted(cls):
    """Constructor argument names accepted by a tf_keras class."""
    names = set()
    if issubclass(cls, _modules()[0].layers.Layer):
        names = {"name", "trainable", "dtype", "activity_regularizer", "autocast"}
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names.update(inspect.signature(klass.__init__).parameters)
    return names - {"self", "kwargs"}


def _leaf_twin(layer, path, wrap_cls):
    tf_keras, _ = _modules()
    custom, wrapped = _custom_classes()
    name = layer.__class__.__name__
    if wrap_cls and name in wrapped:
        cls = wrapped[name]
    elif name in custom:
        cls = custom[name]
    else:
        cls = getattr(tf_keras.layers, name, None)
    if cls is None:
        raise ValueError(
            f"Layer '{path}' of class {name} has no tf_keras equivalent; the TF-MOT "
            "arm cannot rebuild it."
        )
    accepted = _accepted(cls)
    config = {k: _translate(v) for k, v in layer.get_config().items() if k in accepted}
    return cls.from_config(config)


def _map_args(value, tensors):
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        history = value["config"]["keras_history"]
        return tensors[tuple(history)]
    if isinstance(value, (list, tuple)):
        return type(value)(_map_args(v, tensors) for v in value)
    if isinstance(value, dict):
        return {k: _map_args(v, tensors) for k, v in value.items()}
    return value


def _build(model, path, make_leaf, wrap_cls):
    """Rebuilds a Keras 3 Functional/Sequential model in tf_keras."""
    tf_keras, _ = _modules()
    prefix = f"{path}/" if path else ""
    if isinstance(model, keras.Sequential):
        shape = tuple(model.inputs[0].shape)
        layers = [_twin_layer(layer, prefix + layer.name, make_leaf, wrap_cls) for layer in model.layers]
        inputs = tf_keras.Input(batch_shape=shape, dtype=model.inputs[0].dtype)
        return tf_keras.Sequential([inputs] + layers, name=model.name)
    config = model.get_config()
    operations = {op.name: op for op in model.operations}
    tensors = {}
    for layer_config in config["layers"]:
        name = layer_config["name"]
        layer = operations[name]
        if layer_config["class_name"] == "InputLayer":
            cfg = layer_config["config"]
            tensors[(name, 0, 0)] = tf_keras.Input(
                batch_shape=tuple(cfg["batch_shape"]), dtype=cfg.get("dtype"), name=name
            )
            continue
        is_layer = isinstance(layer, keras.layers.Layer)
        twin = _twin_layer(layer, prefix + name, make_leaf, wrap_cls) if is_layer else None
        for node_index, node in enumerate(layer_config["inbound_nodes"]):
            args = _map_args(node["args"], tensors)
            kwargs = _map_args(node["kwargs"], tensors)
            kwargs.pop("mask", None)
            if is_layer:
                outputs = twin(*args, **kwargs)
            else:
                outputs = _op_lambda(layer, args, kwargs, name)
            flat = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            for tensor_index, tensor in enumerate(flat):
                tensors[(name, node_index, tensor_index)] = tensor

    def lookup(spec):
        if spec and isinstance(spec[0], str):
            return tensors[tuple(spec)]
        return [lookup(s) for s in spec]

    inputs = lookup(config["input_layers"])
    outputs = lookup(config["output_layers"])
    return tf_keras.Model(inputs, outputs, name=model.name)


def _op_lambda(op, args, kwargs, name):
    """Calls a Keras 3 operation (e.g. ``x + y`` in ConvNeXt) in a tf_keras Lambda."""
    tf_keras, _ = _modules()
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    flat = tf.nest.flatten((args, kwargs))
    positions = [i for i, v in enumerate(flat) if tf_keras.backend.is_keras_tensor(v)]

    def call(tensors):
        values = list(flat)
        for i, t in zip(positions, tensors):
            values[i] = t
        a, k = tf.nest.pack_sequence_as((args, kwargs), values)
        return op(*a, **k)

    return tf_keras.layers.Lambda(call, name=name)([flat[i] for i in positions])


def _twin_layer(layer, path, make_leaf, wrap_cls):
    if isinstance(layer, keras.Model):
        return _build(layer, path, make_leaf, wrap_cls)
    return make_leaf(path, _leaf_twin(layer, path, wrap_cls))


def _inner(layer):
    return getattr(layer, "layer", layer)


def _twin_leaves(twin, prefix=""):
    """``{path: tf_keras leaf layer}`` of a twin (pruning wrappers unwrapped)."""
    tf_keras, _ = _modules()
    out = {}
    for layer in twin.layers:
        inner = _inner(layer)
        path = prefix + inner.name
        if isinstance(inner, tf_keras.Model):
            out.update(_twin_leaves(inner, path + "/"))
        else:
            out[path] = layer
    return out


def _copy_weights(model, twin):
    leaves = _twin_leaves(twin)
    for path, layer in prunable.iter_layers(model):
        target = _inner(leaves[path])
        weights = layer.get_weights()
        if [tuple(w.shape) for w in target.get_weights()] != [w.shape for w in weights]:
            raise ValueError(
                f"Layer '{path}': tf_keras twin weights "
                f"{[tuple(w.shape) for w in target.get_weights()]} do not match "
                f"{[w.shape for w in weights]}."
            )
        target.set_weights(weights)


def _check_outputs(model, twin, atol):
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2,) + tuple(t.shape)[1:]).astype("float32") for t in model.inputs]
    x = xs if len(xs) > 1 else xs[0]
    want = [np.asarray(a) for a in _flat(model(x, training=False))]
    got = [np.asarray(a) for a in _flat(twin(x, training=False))]
    for a, b in zip(want, got):
        diff = float(np.max(np.abs(a - b)))
        if diff > atol * max(1.0, float(np.max(np.abs(a)))):
            raise ValueError(
                f"tf_keras twin of model '{model.name}' differs from it by {diff:.3g} "
                f"(tolerance {atol}); a layer config did not carry over."
            )


def _flat(outputs):
    return outputs if isinstance(outputs, (list, tuple)) else [outputs]


def to_tf_keras(model, *, check=True, atol=1e-4):
    """A plain tf_keras copy of a Keras 3 model (same layer names and weights).

    Args:
        model: A built Keras 3 Functional or Sequential model.
        check: Compare both models' outputs on random inputs.
        atol: Tolerance of the check, relative to the output magnitude.

    Returns:
        A ``tf_keras.Model``.

    Raises:
        TypeError: If ``model`` is not a Keras 3 model.
        ValueError: If a layer has no tf_keras equivalent, a weight shape
            differs, or the outputs differ.

    Example:
        >>> twin = sparsity.to_tf_keras(keras.applications.MobileNetV2(weights=None))
    """
    _check_model(model)
    twin = _build(model, "", lambda path, leaf: leaf, wrap_cls=False)
    _copy_weights(model, twin)
    if check:
        _check_outputs(model, twin, atol)
    return twin


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a Keras 3 model (keras.Model). "
            f"Received: model={model!r} of type {type(model).__name__}"
        )


def to_tfmot(model, masks, *, check=True, atol=1e-4):
    """tf_keras twin with TF-MOT pruning wrappers holding fixed masks.

    Every prunable layer (Conv, Conv transpose, Dense, DepthwiseConv,
    SeparableConv) is wrapped with ``prune_low_magnitude`` under a schedule
    that never fires; its mask variables are set from ``masks`` (all ones
    for kernels not in ``masks``) and its kernels multiplied by them. Train
    with ``callbacks=sparsity.callbacks()``; the zeros stay where the masks put
    them.

    Args:
        model: A built Keras 3 model (the one the masks were computed on).
        masks: ``{kernel key: 0/1 array}``, e.g. from :func:`sparsity.synflow`.
        check: Before the masks are set, compare the twin's outputs with the
            Keras 3 model's.
        atol: Tolerance of that check, relative to the output magnitude.

    Returns:
        A ``tf_keras.Model`` with ``PruneLowMagnitude`` wrappers (wrapper names
        are ``prune_low_magnitude_<layer>``; the wrapped layers keep theirs).

    Raises:
        TypeError: If ``model`` is not a Keras 3 model.
        ValueError: If a mask key is unknown, a mask shape differs, or the twin
            cannot be built.

    Example:
        >>> pruned = sparsity.to_tfmot(model, sparsity.synflow(model, flops=0.5))
        >>> pruned.compile("sgd", "sparse_categorical_crossentropy")
        >>> pruned.fit(x, y, callbacks=sparsity.callbacks())
    """
    _check_model(model)
    _, tfmot = _modules()
    kernels = prunable.prunable_kernels(model)
    by_path = {}
    for k in kernels:
        by_path.setdefault(k.path, []).append(k)
    unknown = sorted(set(masks) - {k.key for k in kernels})
    if unknown:
        raise ValueError(f"`masks` has keys that are not prunable kernels of the model: {unknown}")
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=_NEVER)

    def make_leaf(path, leaf):
        if path in by_path:
            return tfmot.sparsity.keras.prune_low_magnitude(leaf, pruning_schedule=schedule)
        return leaf

    twin = _build(model, "", make_leaf, wrap_cls=True)
    _copy_weights(model, twin)
    if check:
        _check_outputs(model, twin, atol)
    leaves = _twin_leaves(twin)
    for path, ks in by_path.items():
        wrapper = leaves[path]
        for k, (weight, mask, _) in zip(ks, wrapper.pruning_vars):
            expected = _TF_KERAS_ATTR.get((k.layer.__class__.__name__, k.attr), k.attr)
            if not weight.name.split("/")[-1].startswith(expected):
                raise ValueError(
                    f"Layer '{path}': TF-MOT prunes '{weight.name}' where '{expected}' was expected."
                )
            m = np.ones(k.shape, dtype="float32") if k.key not in masks else np.asarray(masks[k.key], "float32")
            if m.shape != k.shape:
                raise ValueError(f"Mask '{k.key}' has shape {m.shape} but the kernel has shape {k.shape}.")
            mask.assign(m)
            weight.assign(weight.numpy() * m)
    return twin


def callbacks():
    """Callbacks a TF-MOT pruned model must be trained with.

    Returns:
        ``[tfmot.sparsity.keras.UpdatePruningStep()]``.

    Example:
        >>> pruned.fit(x, y, callbacks=sparsity.callbacks())
    """
    _, tfmot = _modules()
    return [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(pruned):
    """Removes the pruning wrappers: a plain tf_keras model, ready for TFLite.

    Runs ``tfmot.sparsity.keras.strip_pruning`` and turns the prunable
    DepthwiseConv/SeparableConv subclasses back into stock tf_keras layers, so
    the result needs no custom objects.

    Args:
        pruned: A model returned by :func:`to_tfmot` (trained or not).

    Returns:
        A ``tf_keras.Model`` with the masked (zero) weights in place.

    Example:
        >>> final = sparsity.strip(pruned)
        >>> tf.lite.TFLiteConverter.from_keras_model(final).convert()
    """
    tf_keras, tfmot = _modules()
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    _, wrapped = _custom_classes()
    subclasses = tuple(wrapped.values())

    def plain(layer):
        if isinstance(layer, tf_keras.Model):
            return tf_keras.models.clone_model(layer, clone_function=plain)
        if isinstance(layer, subclasses):
            base = getattr(tf_keras.layers, layer.__class__.__name__[len("Prunable"):])
            return base.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    out = tf_keras.models.clone_model(stripped, clone_function=plain)
    for src, dst in zip(_all_layers(stripped), _all_layers(out)):
        dst.set_weights(src.get_weights())
    return out


def _all_layers(model):
    """Leaf layers of a tf_keras model in order, recursing into sub-models."""
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            out.extend(_all_layers(layer))
        else:
            out.append(layer)
    return out
