"""Channel importance: one score per channel class, reduced over every member of its group.

A channel is scored over *all* the weights that hold it (DepGraph, Fang et al. 2023): each producer's
output filter, each consumer's input slice, every BN/LN per-channel vector. The per-slice statistic
depends on the criterion; the group score is their sum (or mean) over members (docs/method.md, "Group
importance").
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tf_precrop.prune.mapping import ChannelMap, WeightAxes

CRITERIA = ("bn", "l1", "l2", "random", "taylor")
REDUCTIONS = ("mean", "sum")
_NORMALIZATIONS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                   keras.layers.GroupNormalization)


@dataclasses.dataclass
class Member:
    """One weight axis of a channel group, as a custom importance callable sees it.

    Attributes:
        layer: layer path.
        weight: weight name (``kernel``, ``gamma``...).
        value: the weight's values (numpy).
        axis: the axis that follows the group's channels.
        channels: for each index along ``axis``, the group channel (0 .. size-1) it belongs to, or -1 where
            the axis holds another group (e.g. the other segments of a concatenation).
        groups: for a grouped conv kernel, its ``groups`` (axis -2 then lists all input channels while
            the kernel holds ``in/groups`` of them per filter block); else 1.
    """

    layer: str
    weight: str
    value: np.ndarray
    axis: int
    channels: np.ndarray
    groups: int = 1


@dataclasses.dataclass
class ChannelGroup:
    """What a custom importance callable receives: a group and every weight axis that holds its channels.

    Attributes:
        id: the group's id (as in ``CropPlan.groups``).
        origin: the layer that created the group.
        size: number of channels to score (the callable returns ``size`` scores).
        members: ``Member`` list.
    """

    id: int
    origin: str
    size: int
    members: list


def check_importance(importance, reduction, data, loss):
    """Validates the importance arguments before any work is done."""
    if not callable(importance) and importance not in CRITERIA:
        raise ValueError(f"Unknown importance {importance!r}. Allowed: {list(CRITERIA)} or a callable "
                         f"(group) -> scores. Received: importance={importance!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {list(REDUCTIONS)}. Received: reduction={reduction!r}")
    if importance == "taylor" and (data is None or loss is None):
        raise ValueError(
            "importance='taylor' needs labelled data and a loss: pass data=(x, y) (or an iterable of (x, y) "
            "batches such as a tf.data.Dataset) and loss= (e.g. 'sparse_categorical_crossentropy'). "
            f"Received: data={'None' if data is None else 'given'}, loss={loss!r}"
        )


def slice_statistic(spec: WeightAxes, values: np.ndarray, axis: int) -> np.ndarray:
    """Sum of ``values`` (an elementwise statistic of the weight) over every axis but ``axis``.

    For a grouped conv kernel's input axis, input channel ``b*(in/groups) + r`` is row r of filter block b.
    """
    ndim = values.ndim
    axis = axis % ndim
    if spec.groups > 1 and axis == ndim - 2:
        per_block = values.reshape(values.shape[:-1] + (spec.groups, -1)).sum(axis=-1)  # (..., in/g, g)
        per_block = per_block.reshape(-1, *per_block.shape[-2:]).sum(axis=0)  # (in/g, g)
        return per_block.T.reshape(-1)
    return values.sum(axis=tuple(a for a in range(ndim) if a != axis))


def elementwise(criterion: str, spec: WeightAxes, value: np.ndarray, gradients: list):
    """The per-weight statistic a criterion sums over slices, or None when the weight does not count.

    ``gradients``: per batch, ``{id(variable): dL/dw}`` (``"taylor"`` only).
    """
    if criterion == "l1":
        return np.abs(value) if spec.kernel else None
    if criterion == "l2":  # squared L2: the group score is the squared norm of all its slices together
        return np.square(value) if spec.kernel else None
    if criterion == "bn":
        return np.abs(value) if isinstance(spec.layer, _NORMALIZATIONS) and spec.name == "gamma" else None
    if criterion == "taylor":  # first-order Taylor: sum over batches of |w * dL/dw| (Molchanov et al. 2019)
        grads = [g[id(spec.variable)] for g in gradients if id(spec.variable) in g]
        return sum(np.abs(value * g) for g in grads) if grads else None
    raise AssertionError(criterion)


def class_scores(cmap: ChannelMap, criterion: str, reduction: str, gradients=None):
    """Per-class score and number of weight slices that contributed to it."""
    scores = np.zeros(cmap.num_classes)
    counts = np.zeros(cmap.num_classes)
    for spec in cmap.weights:
        if all(ids is None for ids in spec.axes):
            continue
        value = spec.variable.numpy().astype(np.float64)
        stat = elementwise(criterion, spec, value, gradients or [])
        if stat is None:
            continue
        for axis, ids in enumerate(spec.axes):
            if ids is None:
                continue
            classes = cmap.class_of[ids]
            np.add.at(scores, classes, slice_statistic(spec, stat, axis))
            np.add.at(counts, classes, 1)
    if reduction == "mean":
        scores = np.divide(scores, counts, out=np.zeros_like(scores), where=counts > 0)
    return scores, counts


def group_members(cmap: ChannelMap, classes: np.ndarray) -> list:
    """``Member``s of the weight axes that hold any of ``classes`` (sorted class indices)."""
    local = {int(c): i for i, c in enumerate(classes)}
    members = []
    for spec in cmap.weights:
        for axis, ids in enumerate(spec.axes):
            if ids is None:
                continue
            cls = cmap.class_of[ids]
            if not np.isin(cls, classes).any():
                continue
            channels = np.array([local.get(int(c), -1) for c in cls])
            members.append(Member(spec.path, spec.name, spec.variable.numpy(), axis,
                                  channels, spec.groups))
    return members


def taylor_gradients(model, data, loss) -> list:
    """Per-batch gradients of ``loss`` w.r.t. the trainable weights: a list of ``{id(variable): grad}``."""
    loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    backend = keras.backend.backend()
    if backend == "tensorflow":
        compute = _tensorflow_gradients
    elif backend == "jax":
        compute = _jax_gradients
    else:
        raise ValueError(
            f"importance='taylor' computes gradients with the TensorFlow or JAX backend; this Keras runs on "
            f"{backend!r}. Use importance='l1', 'l2' or 'bn', or set KERAS_BACKEND=tensorflow. "
            f"Received: importance='taylor' on backend {backend!r}"
        )
    return [compute(model, x, y, loss_fn) for x, y in _batches(data)]


def _batches(data):
    if isinstance(data, tuple) and len(data) == 2:
        yield np.asarray(data[0]), np.asarray(data[1])
        return
    for batch in data:
        x, y = batch[0], batch[1]
        yield keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y)


def _scalar(value):
    return keras.ops.mean(value)


def _tensorflow_gradients(model, x, y, loss_fn):
    import tensorflow as tf  # only on the TensorFlow backend

    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        total = _scalar(loss_fn(y, model(x, training=False)))
    grads = tape.gradient(total, [v.value for v in variables])
    return {id(v): np.asarray(g) for v, g in zip(variables, grads) if g is not None}


def _jax_gradients(model, x, y, loss_fn):
    import jax  # only on the JAX backend

    trainable = model.trainable_variables
    non_trainable = [v.value for v in model.non_trainable_variables]

    def compute(values):
        out, _ = model.stateless_call(values, non_trainable, x, training=False)
        return _scalar(loss_fn(y, out))

    grads = jax.grad(compute)([v.value for v in trainable])
    return {id(v): np.asarray(g) for v, g in zip(trainable, grads)}
