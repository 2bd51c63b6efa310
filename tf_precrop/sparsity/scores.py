"""Pruning-at-initialization scores: SynFlow, SNIP, GraSP, magnitude, random.

Every function returns one float64 score array per prunable kernel (in
:func:`~tf_precrop.sparsity.prunable.prunable_kernels` order); higher means
keep. SynFlow is iterative, so :func:`synflow_keep` returns the final kept
sets directly.

SynFlow (docs/method.md § SynFlow and SynExp) runs on a *linearized float64 copy* of the model: every
activation (ReLU, ReLU6, swish, sigmoid gates, ...), Dropout, Rescaling and
Normalization becomes the identity, BatchNormalization the affine map
``|gamma| / sqrt(var + eps) * x + |beta|`` with its current statistics,
LayerNormalization ``|gamma| * x + |beta|``, every parameter its absolute
value; the input is all ones and ``R`` is the sum of the outputs. Without the
linearization saturating activations zero the gradients (on MobileNetV2 the
ReLU6 copies give all-zero scores). The user's model is never modified.
"""

import keras
import numpy as np

from tf_precrop import _extras
from tf_precrop.sparsity import masks as masks_lib
from tf_precrop.sparsity import prunable

# SynFlow/SNIP/GraSP gradients use tf.GradientTape.
tf = _extras.require("tensorflow", "tf_precrop.sparsity")

_IDENTITY = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.Softmax,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    keras.layers.ActivityRegularization,
)


class _Identity(keras.layers.Layer):
    """Identity that accepts (and ignores) call kwargs such as ``training``."""

    def call(self, inputs, **kwargs):
        del kwargs
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


class _Affine(keras.layers.Layer):
    """``x * scale + shift`` along ``axis`` (linearized normalization)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def build(self, input_shape):
        n = (input_shape[self.axis],)
        self.scale = self.add_weight(shape=n, initializer="ones", trainable=False, name="scale")
        self.shift = self.add_weight(shape=n, initializer="zeros", trainable=False, name="shift")

    def call(self, inputs, **kwargs):
        del kwargs
        shape = [1] * len(inputs.shape)
        shape[self.axis] = -1
        scale = keras.ops.reshape(self.scale, shape)
        return inputs * scale + keras.ops.reshape(self.shift, shape)

    def compute_output_shape(self, input_shape):
        return input_shape


class _Normalized(keras.layers.Layer):
    """Divides a layer's output by its (constant, stop-gradient) mean.

    A per-layer rescaling by a constant: used only when ``R`` overflows even in
    float64 (e.g. EfficientNet, whose linearized squeeze-excite multiplies
    square the signal in every block).
    """

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, inputs, **kwargs):
        y = self.inner(inputs, **kwargs)
        scale = tf.stop_gradient(tf.maximum(tf.reduce_mean(y), 1e-300))
        return y / scale


def _single_axis(layer):
    axis = layer.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise ValueError(
                f"Cannot linearize layer '{layer.name}' ({layer.__class__.__name__}) "
                f"normalizing over several axes. Received: axis={axis}"
            )
        axis = axis[0]
    return axis


def _clone_fn(normalize):
    def clone(layer):
        if isinstance(layer, keras.Model):
            return _linearize(layer, normalize)
        if not isinstance(layer, keras.layers.Layer):  # A Keras op such as ``x + y``.
            return layer.__class__.from_config(layer.get_config())
        if isinstance(layer, _IDENTITY):
            return _Identity(name=layer.name, dtype="float64")
        if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization)):
            return _Affine(axis=_single_axis(layer), name=layer.name, dtype="float64")
        config = layer.get_config()
        config["dtype"] = "float64"
        if "activation" in config:
            config["activation"] = "linear"
        new = layer.__class__.from_config(config)
        if normalize and prunable.kernel_attrs(layer):
            return _Normalized(new, name=layer.name, dtype="float64")
        return new

    return clone


def _linearize(model, normalize):
    inputs = []
    for t in model.inputs:
        shape = tuple(t.shape)[1:]
        if any(d is None for d in shape):
            raise ValueError(
                f"SynFlow needs a static input shape; model '{model.name}' has input "
                f"shape {tuple(t.shape)}. Build it with a fixed input_shape."
            )
        inputs.append(keras.Input(batch_shape=(1,) + shape, dtype="float64"))
    if isinstance(model, keras.Sequential):
        layers = [_clone_fn(normalize)(layer) for layer in model.layers]
        return keras.Sequential([inputs[0]] + layers, name=model.name)
    return keras.models.clone_model(
        model,
        input_tensors=inputs if len(inputs) > 1 else inputs[0],
        clone_function=_clone_fn(normalize),
    )


def _abs_weights(src, dst):
    """Copies ``|w|`` (float64) from ``src`` to its linearized twin ``dst``."""
    if isinstance(dst, _Normalized):
        dst = dst.inner
    if isinstance(dst, _Affine):
        w = {v.path.split("/")[-1]: v.numpy().astype(np.float64) for v in src.weights}
        n = dst.scale.shape[0]
        gamma = np.abs(w.get("gamma", np.ones(n)))
        if isinstance(src, keras.layers.BatchNormalization):
            gamma = gamma / np.sqrt(w["moving_variance"] + src.epsilon)
        dst.scale.assign(gamma)
        dst.shift.assign(np.abs(w.get("beta", np.zeros(n))))
    elif dst.weights:
        dst.set_weights([np.abs(np.asarray(w, dtype=np.float64)) for w in src.get_weights()])


class LinearizedModel:
    """A linearized float64 copy of a model, for SynFlow and SynExp.

    Attributes:
        kernels: The original model's prunable kernels.
        variables: The copy's kernel variables, same order.
        biases: The copy's bias variable of each kernel's layer, or ``None``.
        abs_kernels: ``|w|`` of each kernel (float64 numpy).

    Example:
        >>> lin = LinearizedModel(model)
        >>> r, grads = lin.objective_and_grads([np.ones(k.shape) for k in lin.kernels])
    """

    def __init__(self, model, normalize=False):
        """Builds the copy.

        Args:
            model: A built Keras 3 model with static input shapes.
            normalize: Divide each prunable layer's output by its mean (a
                constant per-layer rescaling), for nets whose ``R`` overflows.

        Raises:
            ValueError: If an input shape is not static or a normalization
                layer normalizes over several axes.
        """
        self.kernels = prunable.prunable_kernels(model)
        self.normalize = normalize
        self.copy = _linearize(model, normalize)
        src_layers = dict(prunable.iter_layers(model))
        dst_layers = dict(prunable.iter_layers(self.copy))
        for path, layer in src_layers.items():
            if layer.weights:  # Input layers (renamed by cloning) have none.
                _abs_weights(layer, dst_layers[path])
        self.variables, self.biases = [], []
        for k in self.kernels:
            layer = dst_layers[k.path]
            if isinstance(layer, _Normalized):
                layer = layer.inner
            self.variables.append(getattr(layer, k.attr))
            self.biases.append(getattr(layer, "bias", None) if k.attr != "depthwise_kernel" else None)
        self.abs_kernels = [np.abs(k.variable.numpy()).astype(np.float64) for k in self.kernels]
        self.abs_biases = [None if b is None else b.numpy() for b in self.biases]
        self._ones = [tf.ones(t.shape, tf.float64) for t in self.copy.inputs]
        self._step = tf.function(self._objective_and_grads)

    def _objective_and_grads(self):
        with tf.GradientTape() as tape:
            out = self.copy(self._ones if len(self._ones) > 1 else self._ones[0], training=False)
            r = tf.add_n([tf.reduce_sum(o) for o in tf.nest.flatten(out)])
        return r, tape.gradient(r, self.variables)

    def objective_and_grads(self, kernel_masks, bias_masks=None):
        """``R`` and ``dR/d|w|`` with ``|w| * mask`` in every kernel.

        Args:
            kernel_masks: One 0/1 array per kernel (or ``None`` for dense).
            bias_masks: Optional, one 0/1 array (or ``None``) per kernel for
                the bias of its layer (channel-level masking).

        Returns:
            ``(R as float, list of gradient arrays)``.
        """
        for i, (var, w, m) in enumerate(zip(self.variables, self.abs_kernels, kernel_masks)):
            var.assign(w if m is None else w * m)
            if self.biases[i] is not None:
                bm = None if bias_masks is None else bias_masks[i]
                b = self.abs_biases[i]
                self.biases[i].assign(b if bm is None else b * bm)
        r, grads = self._step()
        return float(r), [g.numpy() for g in grads]


def synflow_scores(model, masks=None):
    """One SynFlow pass: ``S = dR/dθ ⊙ θ`` on the linearized float64 copy.

    Args:
        model: A built Keras 3 model with a static input shape.
        masks: Optional ``{kernel key: 0/1 array}`` applied to ``|θ|``
            (missing kernels are dense).

    Returns:
        List of float64 score arrays, one per kernel (masked weights score 0).

    Raises:
        ValueError: If a mask key is unknown or a shape does not match.

    Example:
        >>> s = synflow_scores(model)
        >>> all(x.min() >= 0 for x in s)
        True
    """
    lin = LinearizedModel(model)
    arrays = masks_lib.mask_arrays(lin.kernels, masks or {})
    _, grads = lin.objective_and_grads(arrays)
    return [g * w if m is None else g * w * m for g, w, m in zip(grads, lin.abs_kernels, arrays)]


def synflow_keep(model, *, max_macs=None, max_weights=None, dense_macs, dense_weights,
                 iterations=100):
    """Iterative SynFlow (docs/method.md § SynFlow and SynExp): the kept set of every kernel.

    At step ``k = 1..n`` the scores ``S = dR/dθ ⊙ θ`` of the masked linearized
    copy are recomputed and the global top set within ``budget * r^(k/n)``
    is kept, where ``r`` is the final kept/dense kernel-cost ratio (an
    exponential schedule on the budget; with a density budget this is the
    paper's ``d^(k/n)``). Computed in float64; if ``R`` still overflows, every
    prunable layer's output is rescaled by a constant (its mean) and SynFlow
    restarts on that copy.

    Args:
        model: A built Keras 3 model.
        max_macs: Final kept kernel MACs, or ``None``.
        max_weights: Final kept kernel weights, or ``None``.
        dense_macs: Dense kernel MACs.
        dense_weights: Dense kernel weights.
        iterations: Number of prune-rescore steps ``n``.

    Returns:
        ``(list of boolean keep arrays, info dict)``; ``info`` has
        ``normalized`` (whether the overflow fallback was used) and
        ``iterations``.

    Raises:
        ValueError: If ``iterations`` is not a positive int.

    Example:
        >>> keep, info = synflow_keep(model, max_macs=0.5 * macs, dense_macs=macs,
        ...                           dense_weights=n)
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(
            f"`iterations` must be a positive int. Received: iterations={iterations!r}"
        )
    for normalize in (False, True):
        lin = LinearizedModel(model, normalize=normalize)
        keep = [None] * len(lin.kernels)
        overflow = False
        for step in range(1, iterations + 1):
            r, grads = lin.objective_and_grads(keep)
            if not np.isfinite(r):
                overflow = True
                break
            scores = []
            for g, w, m in zip(grads, lin.abs_kernels, keep):
                s = g * w
                scores.append(s if m is None else np.where(m, s, -np.inf))
            frac = step / iterations
            keep = masks_lib.select_top(
                lin.kernels,
                scores,
                max_macs=None if max_macs is None else dense_macs * (max_macs / dense_macs) ** frac,
                max_weights=None if max_weights is None
                else dense_weights * (max_weights / dense_weights) ** frac,
            )
        if not overflow:
            return keep, {"normalized": normalize, "iterations": iterations}
    raise ValueError(
        f"SynFlow objective of model '{model.name}' is not finite even after per-layer "
        "rescaling; check the model's weights."
    )


def magnitude_scores(model):
    """``|w|`` of every prunable kernel.

    Args:
        model: A built Keras 3 model.

    Returns:
        List of float64 arrays, one per kernel.

    Example:
        >>> s = magnitude_scores(model)
    """
    return [np.abs(k.variable.numpy()).astype(np.float64) for k in prunable.prunable_kernels(model)]


def random_scores(model, seed=0):
    """Uniform random scores (a global random ranking).

    Args:
        model: A built Keras 3 model.
        seed: Seed of the random generator.

    Returns:
        List of float64 arrays, one per kernel.

    Example:
        >>> s = random_scores(model, seed=1)
    """
    rng = np.random.default_rng(seed)
    return [rng.random(k.shape) for k in prunable.prunable_kernels(model)]


def _is_softmax(layer):
    act = getattr(layer, "activation", None)
    return act is keras.activations.softmax or getattr(act, "__name__", "") == "softmax"


def _logits_fn(model):
    """A callable giving the model's logits (its softmax undone exactly).

    A final ``Dense(..., activation="softmax")`` or ``Activation("softmax")``
    is bypassed through a functional view of the same weights; any other
    output is taken as logits.
    """
    last = model.layers[-1]
    if not _is_softmax(last) or len(model.outputs) != 1:
        return lambda x: model(x, training=False)
    features = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, last.input)
    if isinstance(last, keras.layers.Activation):
        return lambda x: features(x, training=False)
    if isinstance(last, keras.layers.Dense):

        def dense_logits(x):
            z = tf.matmul(features(x, training=False), last.kernel)
            return z + last.bias if last.use_bias else z

        return dense_logits
    raise ValueError(
        f"Cannot take logits of model '{model.name}': its last layer '{last.name}' "
        f"({last.__class__.__name__}) applies a softmax; end the model with "
        "Dense(..., activation='softmax') or Activation('softmax'), or output logits."
    )


def _logits(logits_fn, x, temperature=1.0):
    return tf.cast(logits_fn(x), tf.float32) / temperature


def _loss(logits, y):
    y = tf.convert_to_tensor(y)
    if y.dtype.is_integer or (len(y.shape) == len(logits.shape) - 1):
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(tf.reshape(y, [-1]), tf.int32), logits=logits
            )
        )
    return tf.reduce_mean(
        tf.nn.softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.float32), logits=logits)
    )


def _check_batches(batches, method):
    if batches is None:
        raise ValueError(
            f"method={method!r} needs data: pass batches=[(x, y), ...] "
            "(numpy arrays; y integer labels or one-hot). Received: batches=None"
        )
    batches = list(batches)
    if not batches:
        raise ValueError(f"method={method!r} needs at least one batch. Received: batches=[]")
    return batches


def snip_scores(model, batches):
    """SNIP: ``|dL/dw ⊙ w|`` summed over batches (inference mode).

    The loss is softmax cross-entropy on the model's logits (a final softmax is
    bypassed); BatchNormalization runs in inference mode, so the model's
    statistics are not touched.

    Args:
        model: A built Keras 3 classifier.
        batches: Iterable of ``(x, y)`` numpy pairs; ``y`` integer labels or
            one-hot.

    Returns:
        List of float64 arrays, one per kernel.

    Raises:
        ValueError: If ``batches`` is ``None`` or empty, or the logits cannot
            be taken (a softmax inside a layer other than Dense/Activation).

    Example:
        >>> s = snip_scores(model, [(x[:64], y[:64])])
    """
    batches = _check_batches(batches, "snip")
    kernels = prunable.prunable_kernels(model)
    variables = [k.variable for k in kernels]
    logits_fn = _logits_fn(model)
    total = [np.zeros(k.shape) for k in kernels]
    for x, y in batches:
        with tf.GradientTape() as tape:
            loss = _loss(_logits(logits_fn, x), y)
        for t, g, v in zip(total, tape.gradient(loss, variables), variables):
            t += np.abs(g.numpy() * v.numpy())
    return total


def grasp_scores(model, batches, temperature=200.0):
    """GraSP: keep-score ``θ ⊙ Hg`` (GraSP removes the top of ``-θ ⊙ Hg``).

    ``g`` is the loss gradient summed over batches, ``Hg`` the Hessian-gradient
    product, both at temperature ``T`` on the logits (Wang et al. 2020, as in
    the SynFlow reference code); inference mode.

    Args:
        model: A built Keras 3 classifier.
        batches: Iterable of ``(x, y)`` numpy pairs.
        temperature: Logit temperature ``T``.

    Returns:
        List of float64 arrays, one per kernel.

    Raises:
        ValueError: If ``batches`` is ``None`` or empty, or the logits cannot
            be taken (a softmax inside a layer other than Dense/Activation).

    Example:
        >>> s = grasp_scores(model, [(x[:64], y[:64])])
    """
    batches = _check_batches(batches, "grasp")
    kernels = prunable.prunable_kernels(model)
    variables = [k.variable for k in kernels]
    logits_fn = _logits_fn(model)
    g = [tf.zeros(k.shape) for k in kernels]
    for x, y in batches:
        with tf.GradientTape() as tape:
            loss = _loss(_logits(logits_fn, x, temperature), y)
        g = [a + b for a, b in zip(g, tape.gradient(loss, variables))]
    hg = [np.zeros(k.shape) for k in kernels]
    for x, y in batches:
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = _loss(_logits(logits_fn, x, temperature), y)
            grads = inner.gradient(loss, variables)
            z = tf.add_n([tf.reduce_sum(a * tf.stop_gradient(b)) for a, b in zip(grads, g)])
        for t, h in zip(hg, outer.gradient(z, variables)):
            t += h.numpy()
    return [h * v.numpy() for h, v in zip(hg, variables)]
