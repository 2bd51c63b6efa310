"""Weight mapping of tf_precrop.prune, one test per row of docs/method.md's mapping table.

Exactness: a model whose removed channels are *dead* (zero producer kernel and bias, zero BN gamma and
beta, zero consumer input slices, the same indices across residual adds) has importance exactly 0 there;
pruning must remove exactly those channels and compute the same function.
"""

import keras
import numpy as np
import pytest

import tf_precrop
from tf_precrop.graph.walker import ModelGraph
from tf_precrop.prune import mapping, selection

L = keras.layers
_STATISTICS = ("moving_mean", "moving_variance")


def _seeded(build):
    keras.utils.set_random_seed(0)
    return build()


def _conv_bn_residual():
    x = keras.Input((8, 8, 3))
    a = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name="stem")(x)))
    b = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(a)))
    b = L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(b))
    y = L.ReLU()(L.Add()([a, b]))
    y = L.GlobalAveragePooling2D()(L.Conv2D(12, 1)(y))
    return keras.Model(x, L.Dense(5)(y))


def _dense_flatten():
    x = keras.Input((4, 4, 3))
    y = L.ReLU()(L.Conv2D(6, 3, padding="same")(x))
    y = L.Flatten()(y)
    y = L.ReLU()(L.Dense(16)(y))
    y = L.ReLU()(L.Dense(12)(y))
    return keras.Model(x, L.Dense(4)(y))


def _depthwise_multiplier():
    x = keras.Input((8, 8, 3))
    y = L.ReLU()(L.Conv2D(8, 1)(x))
    y = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(y)))
    y = L.ReLU()(L.Conv2D(10, 1)(y))
    return keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(y)))


def _separable():
    x = keras.Input((8, 8, 3))
    y = L.ReLU()(L.Conv2D(8, 1)(x))
    y = L.ReLU()(L.SeparableConv2D(12, 3, depth_multiplier=2, padding="same")(y))
    y = L.ReLU()(L.SeparableConv2D(10, 3, padding="same")(y))
    return keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(y)))


def _grouped():
    x = keras.Input((8, 8, 4))
    y = L.ReLU()(L.Conv2D(8, 1)(x))
    y = L.ReLU()(L.Conv2D(16, 3, groups=4, padding="same")(y))
    y = L.ReLU()(L.Conv2D(16, 3, groups=16, padding="same")(y))  # ConvNeXt's depthwise as Conv2D
    y = L.ReLU()(L.Conv2D(8, 1)(y))
    return keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(y)))


def _concatenation():
    x = keras.Input((8, 8, 3))
    a = L.ReLU()(L.Conv2D(6, 1)(x))
    b = L.ReLU()(L.BatchNormalization()(L.Conv2D(10, 3, padding="same")(x)))
    c = L.Concatenate()([a, b])
    d = L.ReLU()(L.Conv2D(16, 1)(c))
    y = L.Add()([c, d])
    return keras.Model(x, L.Dense(3)(L.Flatten()(L.Conv2D(4, 1)(y))))


def _transpose():
    x = keras.Input((4, 4, 3))
    y = L.ReLU()(L.Conv2D(8, 3, padding="same")(x))
    y = L.ReLU()(L.Conv2DTranspose(10, 3, strides=2, padding="same")(y))
    y = L.ReLU()(L.Conv2DTranspose(6, 3, padding="same")(y))
    return keras.Model(x, L.Conv2D(2, 1)(y))


def _nested():
    inner_in = keras.Input((8, 8, 8))
    inner_y = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(inner_in)))
    inner = keras.Model(inner_in, L.Add()([inner_in, inner_y]), name="block")
    seq = keras.Sequential([keras.Input((8, 8, 8)), L.Conv2D(12, 1), L.ReLU()], name="head")
    x = keras.Input((8, 8, 3))
    y = L.ReLU()(L.Conv2D(8, 3, padding="same")(x))
    y = inner(inner(y))  # a nested model called twice: shared weights, one set of indices
    y = seq(y)
    return keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(y)))


def _shared_layer():
    x = keras.Input((8, 8, 3))
    y = L.ReLU()(L.Conv2D(8, 1)(x))
    shared = L.Conv2D(8, 3, padding="same", name="shared")
    z = L.ReLU()(shared(y))
    z = L.ReLU()(shared(z))
    return keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(L.Add()([y, z]))))


MODELS = {
    "conv_bn_residual": _conv_bn_residual,
    "dense_flatten": _dense_flatten,
    "depthwise_multiplier": _depthwise_multiplier,
    "separable": _separable,
    "grouped": _grouped,
    "concatenation": _concatenation,
    "conv_transpose": _transpose,
    "nested": _nested,
    "shared_layer": _shared_layer,
}


def _kill(model, plan, seed=0):
    """Zeroes every weight slice of the channels a random selection removes (BN statistics excepted).

    Returns the removed classes' mask over the channel map's classes, and the map.
    """
    cmap = mapping.ChannelMap(model, ModelGraph(model))
    keep = selection.select(cmap, plan, np.random.default_rng(seed).random(cmap.num_classes))
    dead = ~keep[cmap.class_of]
    for spec in cmap.weights:
        if spec.name in _STATISTICS:
            continue
        value = spec.variable.numpy()
        for axis, ids in enumerate(spec.axes):
            if ids is None:
                continue
            if spec.groups > 1 and axis == value.ndim - 2:
                per_block = value.shape[-1] // spec.groups
                for i in np.flatnonzero(dead[ids]):
                    rows, block = i % value.shape[-2], i // value.shape[-2]
                    value[..., rows, block * per_block:(block + 1) * per_block] = 0
            else:
                index = [slice(None)] * value.ndim
                index[axis] = dead[ids]
                value[tuple(index)] = 0
        spec.variable.assign(value)
    return keep, cmap


def _trained_like(model):
    """Moving statistics away from (0, 1), so a dead BN channel proves gamma = beta = 0 suffices."""
    for layer in model._flatten_layers():
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.moving_mean.assign(np.linspace(-1, 1, n))
            layer.moving_variance.assign(np.linspace(0.5, 2, n))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dead_channels_are_exactly_the_removed_ones_and_the_function_is_kept(name):
    model = _seeded(MODELS[name])
    _trained_like(model)
    plan = tf_precrop.plan(model, flops=0.5)
    assert any(g.width < g.dense_width for g in plan.groups), "the plan must prune something"
    keep, cmap = _kill(model, plan)
    x = np.random.default_rng(1).normal(size=(2, *model.input_shape[1:])).astype("float32")
    expected = model.predict(x, verbose=0)

    pruned = tf_precrop.prune(model, plan, importance="l1")
    np.testing.assert_allclose(pruned.predict(x, verbose=0), expected, atol=1e-5, rtol=0)
    # Exactly the dead channels were removed: every kept slice is a slice of the dead-free selection.
    kept = keep[cmap.class_of]
    for spec in cmap.weights:
        got = mapping.layer_at(pruned, spec.path).weights[spec.index].numpy()
        np.testing.assert_array_equal(got, mapping.slice_weight(spec, spec.variable.numpy(), lambda i: kept[i]))

    shuffled = tf_precrop.prune(model, plan, importance="random", seed=5)
    assert np.abs(shuffled.predict(x, verbose=0) - expected).max() > 1e-3


def test_kept_slices_by_index_conv_bn_conv_flatten_dense():
    """Independent of the library's slicing: numpy indexing by hand."""
    x = keras.Input((3, 3, 2))
    h = L.ReLU()(L.BatchNormalization(name="bn")(L.Conv2D(8, 1, name="c1")(x)))
    h = L.ReLU()(L.Conv2D(6, 1, name="c2")(h))
    model = keras.Model(x, L.Dense(4, name="d")(L.Flatten()(h)))
    _trained_like(model)
    plan = tf_precrop.plan(model, flops=0.5, uniform=True)
    w1, w2 = plan.layer("c1").width, plan.layer("c2").width
    assert w1 < 8 and w2 < 6
    dead1, dead2 = sorted([1, 5, 2, 7, 3, 0, 4][:8 - w1]), sorted([4, 0, 5, 2, 1][:6 - w2])
    c1, bn, c2, d = (model.get_layer(n) for n in ("c1", "bn", "c2", "d"))
    k1, b1 = c1.kernel.numpy(), c1.bias.numpy()
    k1[..., dead1], b1[dead1] = 0, 0
    c1.kernel.assign(k1), c1.bias.assign(b1)
    k2, b2 = c2.kernel.numpy(), c2.bias.numpy()
    k2[:, :, dead1, :], k2[..., dead2], b2[dead2] = 0, 0, 0
    c2.kernel.assign(k2), c2.bias.assign(b2)
    gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
    gamma[dead1], beta[dead1] = 0, 0
    bn.gamma.assign(gamma), bn.beta.assign(beta)
    kd = d.kernel.numpy().reshape(9, 6, 4)
    kd[:, dead2, :] = 0
    d.kernel.assign(kd.reshape(54, 4))

    pruned = tf_precrop.prune(model, plan)
    alive1 = [i for i in range(8) if i not in dead1]
    alive2 = [i for i in range(6) if i not in dead2]
    np.testing.assert_array_equal(pruned.get_layer("c1").kernel.numpy(), k1[..., alive1])
    np.testing.assert_array_equal(pruned.get_layer("c1").bias.numpy(), b1[alive1])
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        np.testing.assert_array_equal(getattr(pruned.get_layer("bn"), name).numpy(),
                                      getattr(bn, name).numpy()[alive1])
    np.testing.assert_array_equal(pruned.get_layer("c2").kernel.numpy(), k2[:, :, alive1][..., alive2])
    rows = [p * 6 + c for p in range(9) for c in alive2]  # Flatten row p*C + c
    np.testing.assert_array_equal(pruned.get_layer("d").kernel.numpy(), d.kernel.numpy()[rows])
    np.testing.assert_array_equal(pruned.get_layer("d").bias.numpy(), d.bias.numpy())


def test_depthwise_multiplier_outputs_follow_their_input_channel():
    """Depthwise with m = 2: output c*m + j belongs to input channel c (bias and next conv's rows)."""
    x = keras.Input((4, 4, 2))
    h = L.Conv2D(4, 1, name="c")(x)
    h = L.DepthwiseConv2D(1, depth_multiplier=2, name="dw")(h)
    model = keras.Model(x, L.Conv2D(3, 1, name="p")(h))
    plan = tf_precrop.plan(model, flops=0.5, uniform=True)
    assert plan.layer("c").width == 2
    k = model.get_layer("c").kernel.numpy()
    k[..., [0, 2]] *= 100  # channels 0 and 2 dominate
    model.get_layer("c").kernel.assign(k)
    pruned = tf_precrop.prune(model, plan)
    dw = model.get_layer("dw")
    np.testing.assert_array_equal(pruned.get_layer("dw").kernel.numpy(), dw.kernel.numpy()[:, :, [0, 2], :])
    np.testing.assert_array_equal(pruned.get_layer("dw").bias.numpy(), dw.bias.numpy()[[0, 1, 4, 5]])
    np.testing.assert_array_equal(pruned.get_layer("p").kernel.numpy(),
                                  model.get_layer("p").kernel.numpy()[:, :, [0, 1, 4, 5], :])


def test_conv_transpose_kernel_is_out_in():
    x = keras.Input((4, 4, 2))
    h = L.Conv2D(4, 1, name="c")(x)
    model = keras.Model(x, L.Conv2DTranspose(3, 3, name="t")(h))
    plan = tf_precrop.plan(model, flops=0.5, uniform=True)
    keep = [i for i in range(4) if i < plan.layer("c").width]
    k = model.get_layer("c").kernel.numpy()
    k[..., keep] *= 100
    model.get_layer("c").kernel.assign(k)
    pruned = tf_precrop.prune(model, plan)
    np.testing.assert_array_equal(pruned.get_layer("t").kernel.numpy(),
                                  model.get_layer("t").kernel.numpy()[..., keep])


def test_grouped_conv_keeps_an_equal_count_per_group():
    x = keras.Input((4, 4, 2))
    h = L.Conv2D(8, 1, name="c")(x)
    model = keras.Model(x, L.Conv2D(4, 1, groups=2, name="g")(h))
    plan = tf_precrop.plan(model, flops=0.5, uniform=True)
    assert plan.layer("c").width == 4
    k = model.get_layer("c").kernel.numpy()
    k[..., [0, 1, 2, 7]] *= 100  # three of the four best in block 0: only two may stay there
    model.get_layer("c").kernel.assign(k)
    pruned = tf_precrop.prune(model, plan)
    got = pruned.get_layer("c").kernel.numpy()
    kept = [i for i in range(8) if any(np.array_equal(got[..., j], k[..., i]) for j in range(4))]
    assert sum(i < 4 for i in kept) == 2 and sum(i >= 4 for i in kept) == 2
    g = model.get_layer("g").kernel.numpy()  # (1, 1, 4, 4): filters 0-1 read block 0, 2-3 block 1
    np.testing.assert_array_equal(pruned.get_layer("g").kernel.numpy(),
                                  np.concatenate([g[:, :, [i for i in kept if i < 4]][..., :2],
                                                  g[:, :, [i - 4 for i in kept if i >= 4]][..., 2:]], axis=-1))


def test_concatenation_offsets():
    x = keras.Input((4, 4, 2))
    a = L.Conv2D(4, 1, name="a")(x)
    b = L.Conv2D(6, 1, name="b")(x)
    model = keras.Model(x, L.Conv2D(3, 1, name="p")(L.Concatenate()([a, b])))
    plan = tf_precrop.plan(model, flops=0.5, uniform=True)
    wa, wb = plan.layer("a").width, plan.layer("b").width
    ka, kb = model.get_layer("a").kernel.numpy(), model.get_layer("b").kernel.numpy()
    ka[..., :wa] *= 100
    kb[..., 6 - wb:] *= 100
    model.get_layer("a").kernel.assign(ka), model.get_layer("b").kernel.assign(kb)
    pruned = tf_precrop.prune(model, plan)
    rows = list(range(wa)) + [4 + i for i in range(6 - wb, 6)]
    np.testing.assert_array_equal(pruned.get_layer("p").kernel.numpy(),
                                  model.get_layer("p").kernel.numpy()[:, :, rows])


def test_layer_normalization_and_prelu_vectors_follow_channels():
    x = keras.Input((4, 4, 2))
    h = L.Conv2D(4, 1, name="c")(x)
    h = L.PReLU(name="pr")(L.LayerNormalization(name="ln")(h))
    model = keras.Model(x, L.Conv2D(3, 1)(h))
    plan = tf_precrop.plan(model, flops=0.5, uniform=True)
    k = model.get_layer("c").kernel.numpy()
    k[..., [1, 3]] *= 100
    model.get_layer("c").kernel.assign(k)
    ln, pr = model.get_layer("ln"), model.get_layer("pr")
    ln.gamma.assign(np.arange(4.0)), pr.alpha.assign(np.arange(64.0).reshape(4, 4, 4))
    pruned = tf_precrop.prune(model, plan)
    np.testing.assert_array_equal(pruned.get_layer("ln").gamma.numpy(), [1.0, 3.0])
    np.testing.assert_array_equal(pruned.get_layer("pr").alpha.numpy(), pr.alpha.numpy()[..., [1, 3]])


def test_group_normalization_keeps_an_equal_count_per_group():
    x = keras.Input((4, 4, 2))
    h = L.Conv2D(8, 1, name="c")(x)
    h = L.GroupNormalization(groups=2, name="gn")(h)
    model = keras.Model(x, L.Conv2D(3, 1)(h))
    plan = tf_precrop.plan(model, flops=0.5, uniform=True)
    assert plan.layer("c").width == 4
    # Channel magnitudes: the three best (0, 1, 2) are all in group 0, which may keep only two.
    magnitude = np.array([900, 800, 700, 1, 20, 30, 1, 600], dtype="float32")
    model.get_layer("c").kernel.assign(np.ones((1, 1, 2, 8), "float32") * magnitude)
    model.get_layer("gn").gamma.assign(np.arange(8.0))
    pruned = tf_precrop.prune(model, plan)
    np.testing.assert_array_equal(pruned.get_layer("gn").gamma.numpy(), [0.0, 1.0, 5.0, 7.0])
