"""SynFlow: hand-computed scores, layer collapse on ResNet-20, linearization on MobileNetV2."""

import keras
import numpy as np
import tensorflow as tf

import tf_precrop
from tf_precrop import sparsity


def _linear_net():
    keras.utils.set_random_seed(1)
    inp = keras.Input((3,))
    x = keras.layers.Dense(4, use_bias=False, name="d1")(inp)
    x = keras.layers.Dense(5, use_bias=False, activation="relu", name="d2")(x)
    return keras.Model(inp, keras.layers.Dense(2, use_bias=False, name="d3")(x))


def test_synflow_scores_equal_hand_computed_on_linear_net():
    model = _linear_net()
    a1, a2, a3 = (np.abs(w).astype(np.float64) for w in model.get_weights())
    ones_in, ones_out = np.ones(3), np.ones(2)
    # R = 1^T |W1| |W2| |W3| 1 (Keras: y = x W), S = dR/dW ⊙ W with W = |θ|.
    assert sparsity.synflow_objective(model) == np.float64(ones_in @ a1 @ a2 @ a3 @ ones_out)
    want = [
        np.outer(ones_in, a2 @ a3 @ ones_out) * a1,
        np.outer(ones_in @ a1, a3 @ ones_out) * a2,
        np.outer(ones_in @ a1 @ a2, ones_out) * a3,
    ]
    for got, exp in zip(sparsity.synflow_scores(model), want):
        np.testing.assert_allclose(got, exp, rtol=1e-12)
    # One iteration keeps the global top-k of exactly these scores.
    masks = sparsity.synflow(model, density=0.5, iterations=1)
    flat = np.concatenate([w.ravel() for w in want])
    kept = np.concatenate([masks[k].ravel() for k in ("d1/kernel", "d2/kernel", "d3/kernel")])
    assert kept.sum() == 21  # floor(0.5 * 42)
    assert flat[kept == 1].min() >= flat[kept == 0].max()
    # With a mask the pruned weights score exactly zero.
    masked = sparsity.synflow_scores(model, {"d1/kernel": np.zeros((3, 4))})
    assert not masked[0].any() and not masked[1].any() and not masked[2].any()


def test_resnet20_one_percent_collapse():
    model = tf_precrop.models.resnet20()
    masks = sparsity.synflow(model, density=0.01)
    empty = sorted(k for k, d in masks.densities().items() if d == 0)
    # SynFlow keeps every main-path layer (connectivity); the 1x1 projection shortcuts carry
    # few paths and are emptied, which does not disconnect the network.
    assert empty == ["stage2_block1_shortcut_conv/kernel", "stage3_block1_shortcut_conv/kernel"]
    weights = sum(k.weights for k in sparsity.prunable_kernels(model))
    assert sparsity.masked_cost(model, masks)["density"] == np.floor(0.01 * weights) / weights
    magnitude = sorted(k for k, d in sparsity.magnitude(model, density=0.01).densities().items() if d == 0)
    # He-initialised wide layers have small weights: global magnitude empties whole main-path layers.
    main_path_empty = [k for k in magnitude if "shortcut" not in k]
    assert len(main_path_empty) >= 5, magnitude
    rng = np.random.default_rng(0)
    data = [(rng.random((32, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 32))]
    snip_masks = sparsity.snip(model, density=0.01, batches=data)
    # SNIP's |g * w| is not biased towards small wide layers as magnitude is: it empties no layer here.
    assert sorted(k for k, d in snip_masks.densities().items() if d == 0) == []
    assert sparsity.masked_cost(model, snip_masks)["density"] == np.floor(0.01 * weights) / weights


def _nonlinear_synflow_zero_layers(model):
    """Kernels whose SynFlow score is all zero WITHOUT linearizing (|θ|, ones, float64)."""
    copy = keras.models.clone_model(model)
    copy.set_weights([np.abs(w) for w in model.get_weights()])
    kernels = sparsity.prunable_kernels(copy)
    with tf.GradientTape() as tape:
        r = tf.reduce_sum(copy(tf.ones((1,) + tuple(model.input_shape[1:])), training=False))
    grads = tape.gradient(r, [k.variable for k in kernels])
    return [k.key for k, g in zip(kernels, grads) if not np.any(g.numpy() * np.abs(k.variable.numpy()))]


def test_mobilenet_v2_linearized_scores_nonzero_in_every_layer():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), weights=None)
    scores = sparsity.synflow_scores(model)
    assert len(scores) == 53
    assert all(np.count_nonzero(s) > 0 for s in scores)
    assert all(np.isfinite(s).all() for s in scores)
    zero = _nonlinear_synflow_zero_layers(model)
    print(f"without linearization {len(zero)} of 53 kernels score all zero")
    assert len(zero) == 52  # ReLU6 saturates (docs/method.md § SynFlow and SynExp: 52 of 53 at 224x224 too)


def test_synflow_overflow_fallback_on_squeeze_excite():
    model = tf_precrop.models.build("efficientnetb0", input_shape=(32, 32, 3))
    masks = sparsity.synflow(model, flops=0.5, iterations=2)
    assert masks.info["normalized"] is True  # linearized SE gates square the signal: R overflows
    assert abs(masks.info["achieved"]["macs_ratio"] - 0.5) < 0.005
    assert all(np.isfinite(list(masks.densities().values())))
