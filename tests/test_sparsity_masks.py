"""Masks hit their budgets exactly; random masks at weight/kernel/filter granularity; costs."""

import keras
import numpy as np
import pytest

import tf_precrop
from tf_precrop import sparsity
from tf_precrop.sparsity import masks as masks_lib


def tiny_model():
    """Conv, BN, depthwise, separable, residual add, transposed conv and dense (16x16x3)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(6.0, name="r1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.SeparableConv2D(8, 3, padding="same", name="sep")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="tr")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(10, activation="softmax", name="fc")(x)
    return keras.Model(inp, out, name="tiny")


def batches():
    rng = np.random.default_rng(0)
    return [(rng.random((8, 16, 16, 3), dtype=np.float32), rng.integers(0, 10, 8))]


def test_prunable_kernels_keys_and_costs():
    model = tiny_model()
    got = {k.key: (k.shape, k.weights, k.macs) for k in sparsity.prunable_kernels(model)}
    assert got == {
        "c1/kernel": ((3, 3, 3, 8), 216, 216 * 256),
        "dw/kernel": ((3, 3, 8, 1), 72, 72 * 256),
        "sep/depthwise_kernel": ((3, 3, 8, 1), 72, 72 * 256),
        "sep/pointwise_kernel": ((1, 1, 8, 8), 64, 64 * 256),
        "tr/kernel": ((3, 3, 4, 8), 288, 288 * 256),  # transposed conv: input positions
        "fc/kernel": ((4, 10), 40, 40),
    }


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnetb0", "resnet50"])
def test_kernel_macs_add_up_to_the_core_count(name):
    # One counter for everyone: the prunable kernels carry exactly the MACs tf_precrop.count reports.
    model = tf_precrop.models.build(name, input_shape=(32, 32, 3))
    assert sum(k.macs for k in sparsity.prunable_kernels(model)) == tf_precrop.count(model).macs


def test_unknown_layer_gets_the_core_error():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c")(inp)
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0, name="twice")(x))
    with pytest.raises(ValueError, match="Layer 'twice' of class Lambda is not supported"):
        sparsity.prunable_kernels(model)


def test_nested_model_paths():
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None)
    inp = keras.Input((32, 32, 3))
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(base(inp))))
    keys = [k.key for k in sparsity.prunable_kernels(model)]
    assert keys[0] == "mobilenetv2_1.00_32/Conv1/kernel"
    assert "mobilenetv2_1.00_32/expanded_conv_depthwise/kernel" in keys
    assert keys[-1] == "head/kernel" and len(keys) == 53


BUDGETS = [dict(flops=0.3), dict(params=0.45), dict(density=0.2), dict(flops=0.3, params=0.5)]


@pytest.mark.parametrize("method", sparsity.METHODS)
def test_every_method_hits_every_budget_within_half_a_point(method):
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    for budget in BUDGETS:
        kwargs = dict(batches=batches()) if method in ("snip", "grasp") else {}
        if method.startswith("synflow"):
            kwargs["iterations"] = 10
        masks = sparsity.compute_masks(method, model, **budget, **kwargs)
        got = sparsity.masked_cost(model, masks)
        assert got == masks.info["achieved"]
        targets = {"flops": got["macs_ratio"], "params": got["params_ratio"], "density": got["density"]}
        binding = []
        for name, target in budget.items():
            assert targets[name] <= target + 0.005, (method, budget, got)
            binding.append(abs(targets[name] - target) <= 0.005)
        assert any(binding), (method, budget, got)
        for key, m in masks.items():
            assert m.dtype == np.float32 and set(np.unique(m)) <= {0.0, 1.0}, key
        assert got["executed_macs"] == got["dense_macs"] == 182312
    for a, b in zip(before, model.get_weights()):  # the user's model is untouched
        np.testing.assert_array_equal(a, b)


def test_masked_cost_exact_numbers():
    model = tiny_model()
    masks = {"c1/kernel": np.zeros((3, 3, 3, 8), np.float32), "fc/kernel": np.ones((4, 10), np.float32)}
    got = sparsity.masked_cost(model, masks)
    dense_macs = 182312
    assert got["macs"] == dense_macs - 216 * 256
    assert got["params"] == model.count_params() - 216
    assert got["density"] == pytest.approx(1 - 216 / 752)
    assert got["dense_params"] == model.count_params()


def test_select_top_exact_with_ties_and_never_revives_pruned():
    model = tiny_model()
    kernels = sparsity.prunable_kernels(model)
    scores = [np.ones(k.shape) for k in kernels]
    scores[0][...] = -np.inf
    keep = masks_lib.select_top(kernels, scores, max_weights=500)
    assert sum(int(k.sum()) for k in keep) == 500 - 0 and not keep[0].any()
    keep = masks_lib.select_top(kernels, scores, max_weights=10**6)
    assert sum(int(k.sum()) for k in keep) == 752 - 216


@pytest.mark.parametrize("granularity", sparsity.GRANULARITIES)
def test_random_masks_granularity_structure(granularity):
    model = tiny_model()
    dens = {k.key: 0.5 for k in sparsity.prunable_kernels(model)}
    masks = sparsity.random_masks(model, dens, granularity=granularity, seed=3)
    conv = masks["c1/kernel"]  # (3, 3, 3, 8)
    tr = masks["tr/kernel"]  # (3, 3, out=4, in=8)
    if granularity == "weight":
        assert conv.sum() == 108
    elif granularity == "kernel":
        slices = conv.reshape(9, 24)
        assert np.all((slices == slices[0]))  # every 3x3 slice all-0 or all-1
        assert slices[0].sum() == 12
    else:
        assert np.all(conv.reshape(27, 8) == conv.reshape(27, 8)[0])
        assert conv.reshape(27, 8)[0].sum() == 4
        assert np.all(tr.transpose(0, 1, 3, 2).reshape(-1, 4) == tr[0, 0, :, 0])  # filter axis of Conv2DTranspose
        assert tr[0, 0, :, 0].sum() == 2
        dw = masks["dw/kernel"]  # (3, 3, 8, 1): a filter is one channel's 3x3 slice
        assert np.all(dw.reshape(9, 8) == dw[0, 0, :, 0]) and dw[0, 0, :, 0].sum() == 4
    again = sparsity.random_masks(model, dens, granularity=granularity, seed=3)
    assert all(np.array_equal(masks[k], again[k]) for k in masks)


def test_random_masks_zero_density_and_missing_keys():
    model = tiny_model()
    masks = sparsity.random_masks(model, {"fc/kernel": 0.0, "dw/kernel": 0.01})
    assert masks["fc/kernel"].sum() == 0
    assert masks["dw/kernel"].sum() == 1  # at least one unit of a non-empty layer
    assert masks["c1/kernel"].sum() == 216  # not listed: dense


def test_masks_densities():
    masks = sparsity.Masks({"a/kernel": np.array([1.0, 0.0, 0.0, 1.0], np.float32)}, {"method": "x"})
    assert masks.densities() == {"a/kernel": 0.5}
    assert masks.info == {"method": "x"}


def test_errors_are_exact():
    model = tiny_model()
    with pytest.raises(ValueError) as info:
        sparsity.compute_masks("prune_all", model, flops=0.5)
    assert str(info.value) == (
        "`method` must be one of ('synflow', 'snip', 'grasp', 'magnitude', 'random', 'erk', "
        "'uniform', 'optimal', 'synflow_random'). Received: method='prune_all'"
    )
    with pytest.raises(ValueError) as info:
        sparsity.magnitude(model, density=1.5)
    assert str(info.value) == "`density` must be a ratio in (0, 1]. Received: density=1.5"
    with pytest.raises(ValueError) as info:
        sparsity.snip(model, flops=0.5)
    assert str(info.value) == (
        "method='snip' needs data: pass batches=[(x, y), ...] (numpy arrays; y integer labels "
        "or one-hot). Received: batches=None"
    )
    with pytest.raises(ValueError) as info:
        sparsity.compute_masks("erk", model, flops=0.5, batches=batches())
    assert str(info.value) == "method='erk' does not use data; only 'snip' and 'grasp' take batches."
    with pytest.raises(ValueError) as info:
        sparsity.random_masks(model, {}, granularity="block")
    assert str(info.value) == (
        "`granularity` must be one of ('weight', 'kernel', 'filter'). Received: granularity='block'"
    )
    with pytest.raises(ValueError) as info:
        sparsity.random_masks(model, {"c9/kernel": 0.5})
    assert str(info.value) == "`densities` has keys that are not prunable kernels of the model: ['c9/kernel']"
    with pytest.raises(ValueError) as info:
        sparsity.random_masks(model, {"c1/kernel": 1.2})
    assert str(info.value) == "Density of 'c1/kernel' must be in [0, 1]. Received: densities['c1/kernel']=1.2"
    with pytest.raises(ValueError) as info:
        sparsity.masked_cost(model, {"c1/kernel": np.ones((3, 3))})
    assert str(info.value) == "Mask 'c1/kernel' has shape (3, 3) but the kernel has shape (3, 3, 3, 8)."
    with pytest.raises(TypeError) as info:
        sparsity.prunable_kernels("resnet")
    assert str(info.value) == "`model` must be a Keras 3 model (keras.Model). Received: model='resnet' of type str"
    with pytest.raises(ValueError) as info:
        sparsity.synflow(model, flops=0.5, iterations=0)
    assert str(info.value) == "`iterations` must be a positive int. Received: iterations=0"
