"""tf_precrop.prune: the public API, its criteria, report, errors, and keras.applications models."""

import keras
import numpy as np
import pytest

import tf_precrop
from tf_precrop.prune import ChannelGroup

L = keras.layers


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return tf_precrop.models.resnet20(input_shape=(8, 8, 3), width=4, num_classes=3)


def _data(model, n=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, *model.input_shape[1:])).astype("float32")
    return x, rng.integers(0, model.output_shape[-1], size=n)


def test_prune_meets_the_plan_and_leaves_the_input_untouched():
    model = _model()
    config = model.get_config()
    weights = [w.copy() for w in model.get_weights()]
    plan = tf_precrop.plan(model, flops=0.5)
    pruned = tf_precrop.prune(model, flops=0.5)
    assert pruned is not model
    assert tf_precrop.count(pruned).macs == plan.macs
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    assert model.get_config() == config
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_layers_whose_widths_stay_keep_all_their_weights():
    model = _model()
    pruned = tf_precrop.prune(model, flops=0.5)
    unchanged = [layer for layer in model.layers if layer.weights
                 and [w.shape for w in layer.weights] == [w.shape for w in pruned.get_layer(layer.name).weights]]
    assert unchanged
    for layer in unchanged:
        for a, b in zip(layer.get_weights(), pruned.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_l1_beats_random_at_keeping_importance_mass():
    model = _model()
    _, l1 = tf_precrop.prune(model, flops=0.5, return_report=True)
    _, rnd = tf_precrop.prune(model, flops=0.5, importance="random", seed=0, return_report=True)
    assert l1.groups and all(g.kept_importance is not None for g in l1.groups)
    assert all(0 < g.kept_importance <= 1 for g in l1.groups)
    # l1 keeps the top channels, so it keeps more of the l1 mass than any other choice of the same size.
    mass = {g.id: g.kept_importance for g in l1.groups}
    assert all(g.width / g.dense_width <= mass[g.id] + 1e-12 for g in l1.groups)
    summary = l1.summary()
    assert "Importance kept per pruned group (importance=l1, reduction=sum)" in summary
    assert summary.startswith('Plan for "resnet20')
    assert rnd.importance == "random"


@pytest.mark.parametrize("importance", ["l2", "bn", "random"])
def test_criteria_prune_and_run(importance):
    model = _model()
    x, _ = _data(model)
    pruned = tf_precrop.prune(model, flops=0.5, importance=importance, reduction="mean", seed=1)
    assert pruned.predict(x, verbose=0).shape == (8, 3)


def test_random_is_seeded():
    model = _model()
    a = tf_precrop.prune(model, flops=0.5, importance="random", seed=3)
    b = tf_precrop.prune(model, flops=0.5, importance="random", seed=3)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_taylor_with_arrays_and_a_dataset():
    model = _model()
    x, y = _data(model)
    a = tf_precrop.prune(model, flops=0.5, importance="taylor", data=(x, y),
                         loss="sparse_categorical_crossentropy")
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    b = tf_precrop.prune(model, flops=0.5, importance="taylor", data=batches,
                         loss=keras.losses.SparseCategoricalCrossentropy())
    assert a.predict(x, verbose=0).shape == b.predict(x, verbose=0).shape == (8, 3)


def test_taylor_ignores_dead_channels():
    """A channel with zero weights has zero |w * dL/dw| wherever its gradient is."""
    x = keras.Input((4, 4, 2))
    h = L.ReLU()(L.Conv2D(4, 1, name="c")(x))
    model = keras.Model(x, L.Dense(3, name="d")(L.GlobalAveragePooling2D()(h)))
    plan = tf_precrop.plan(model, flops=0.5, uniform=True)
    width = plan.layer("c").width
    dead = list(range(4 - width))
    for name, axis in (("c", -1), ("d", 0)):
        kernel = model.get_layer(name).kernel.numpy()
        np.moveaxis(kernel, axis, 0)[dead] = 0
        model.get_layer(name).kernel.assign(kernel)
    bias = model.get_layer("c").bias.numpy()
    bias[dead] = 0
    model.get_layer("c").bias.assign(bias)
    xs = np.random.default_rng(0).normal(size=(8, 4, 4, 2)).astype("float32")
    ys = np.arange(8) % 3
    pruned = tf_precrop.prune(model, plan, importance="taylor", data=(xs, ys),
                              loss="sparse_categorical_crossentropy")
    np.testing.assert_array_equal(pruned.get_layer("c").kernel.numpy(),
                                  model.get_layer("c").kernel.numpy()[..., len(dead):])
    np.testing.assert_allclose(pruned.predict(xs, verbose=0), model.predict(xs, verbose=0), atol=1e-5)


def test_custom_importance_callable_sees_every_member():
    model = _model()
    seen = []

    def by_index(group: ChannelGroup):
        seen.append(group)
        assert group.members and all(m.channels.max() < group.size for m in group.members)
        return -np.arange(group.size)  # keep the first channels

    pruned = tf_precrop.prune(model, flops=0.5, uniform=True, importance=by_index)
    assert seen
    stem = model.get_layer("stem_conv").kernel.numpy()
    got = pruned.get_layer("stem_conv").kernel.numpy()
    np.testing.assert_array_equal(got, stem[..., :got.shape[-1]])
    # The stem's group is the residual stream: every Add operand and BN in it is a member.
    stream = next(g for g in seen if any(m.layer == "stem_conv" and m.weight == "kernel" for m in g.members))
    assert {"stem_bn", "stage1_block1_bn2"} <= {m.layer for m in stream.members}


def test_custom_importance_with_a_wrong_shape():
    with pytest.raises(ValueError, match=r"The importance callable must return one score per channel of the "
                                         r"group: shape \(\d+,\) for group \d+ .*Received: shape \(2,\)"):
        tf_precrop.prune(_model(), flops=0.5, importance=lambda group: np.zeros(2))


def test_plan_and_uniform_and_round_to():
    model = _model()
    plan = tf_precrop.plan(model, flops=0.5, round_to=2)
    pruned = tf_precrop.prune(model, plan, importance="bn")
    assert tf_precrop.count(pruned).macs == plan.macs
    uniform = tf_precrop.prune(model, flops=0.5, uniform=True)
    assert tf_precrop.count(uniform).macs == tf_precrop.plan(model, flops=0.5, uniform=True).macs


def test_ignored_layers_keep_their_widths_and_weights():
    model = _model()
    pruned = tf_precrop.prune(model, flops=0.5, ignored_layers=["stage2_block1_conv1"])
    for a, b in zip(model.get_layer("stage2_block1_conv1").get_weights(),
                    pruned.get_layer("stage2_block1_conv1").get_weights()):
        assert a.shape[-1] == b.shape[-1]


def test_errors():
    model = _model()
    with pytest.raises(ValueError, match=r"^Unknown importance 'l3'\. Allowed: \['bn', 'l1', 'l2', 'random', "
                                         r"'taylor'\] or a callable \(group\) -> scores\. Received: "
                                         r"importance='l3'$"):
        tf_precrop.prune(model, flops=0.5, importance="l3")
    with pytest.raises(ValueError, match=r"^importance='taylor' needs labelled data and a loss: pass data=\(x, y\) "
                                         r".*Received: data=None, loss=None$"):
        tf_precrop.prune(model, flops=0.5, importance="taylor")
    with pytest.raises(ValueError, match=r"^`reduction` must be one of \['mean', 'sum'\]\. Received: "
                                         r"reduction='max'$"):
        tf_precrop.prune(model, flops=0.5, reduction="max")
    other = tf_precrop.plan(tf_precrop.models.resnet20(input_shape=(8, 8, 3), width=8, num_classes=3),
                            flops=0.5)
    with pytest.raises(ValueError, match=r"^The plan was made for another model"):
        tf_precrop.prune(model, other)
    with pytest.raises(ValueError, match=r"^Pass either a plan or budgets, not both"):
        tf_precrop.prune(model, tf_precrop.plan(model, flops=0.5), flops=0.5)
    with pytest.raises(ValueError, match=r"At least one budget is required"):
        tf_precrop.prune(model)


def test_tflite_export_parity(tmp_path):
    pruned = tf_precrop.prune(_model(), flops=0.5)
    info = tf_precrop.export.to_tflite(pruned, str(tmp_path / "pruned.tflite"), num_check_inputs=2)
    assert info["max_abs_diff"] <= info["tolerance"]


def test_keras_round_trip(tmp_path):
    model = _model()
    x, _ = _data(model)
    pruned = tf_precrop.prune(model, flops=0.5)
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("build", [
    lambda: keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=4),
    lambda: keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=4),
], ids=["mobilenet_v2", "resnet50"])
def test_keras_applications_prune_and_run(build):
    model = build()
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32")
    pruned = tf_precrop.prune(model, flops=0.5, round_to=8)
    assert pruned.predict(x, verbose=0).shape == (1, 4)
    assert tf_precrop.count(pruned).macs < 0.55 * tf_precrop.count(model).macs


def test_prune_taylor_and_distiller_on_jax_without_tensorflow():
    """The pruning line is backend-agnostic: JAX, with TensorFlow made unimportable."""
    import os
    import subprocess
    import sys

    script = '''
import builtins
real_import = builtins.__import__
def block(name, *args, **kwargs):
    if name == "tensorflow" or name.startswith("tensorflow."):
        raise ImportError("tensorflow is blocked in this test")
    return real_import(name, *args, **kwargs)
builtins.__import__ = block
import keras, numpy as np
import tf_precrop
assert keras.backend.backend() == "jax"
L = keras.layers
x = keras.Input((6, 6, 3))
h = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(x)))
h = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(h)
h = L.Add()([L.Conv2D(16, 1)(h), h])
model = keras.Model(x, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(h)))
xs, ys = np.random.rand(4, 6, 6, 3).astype("float32"), np.arange(4) % 3
small = tf_precrop.prune(model, flops=0.5, uniform=True, importance="taylor", data=(xs, ys),
                         loss="sparse_categorical_crossentropy")
distiller = tf_precrop.Distiller(small, model)
distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
distiller.fit(xs, ys, epochs=1, verbose=0)
print("ok", small.count_params() < model.count_params())
'''
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": root}
    result = subprocess.run([sys.executable, "-c", script], check=False, cwd=root, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok True")


def test_prune_iteratively_reaches_the_budget_with_fine_tuning_between_steps():
    model = _model()
    calls = []

    def fine_tune(m, step):
        calls.append((step, tf_precrop.count(m).macs))

    small = tf_precrop.prune_iteratively(model, flops=0.3, steps=2, fine_tune=fine_tune, importance="l2")
    dense = tf_precrop.count(model).macs
    assert [step for step, _ in calls] == [1, 2]
    assert calls[0][1] <= 0.3 ** 0.5 * dense  # the first step lands at the geometric midpoint
    assert tf_precrop.count(small).macs == calls[1][1] <= 0.3 * dense
    with pytest.raises(ValueError, match=r"^`steps` must be a positive integer\. Received: steps=0$"):
        tf_precrop.prune_iteratively(model, flops=0.3, steps=0)


def test_prune_takes_custom_rules_per_call():
    """A custom per-channel layer described by custom_rules prunes like a built-in pass-through."""
    import keras
    import numpy as np

    import tf_precrop

    class Scale(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, name="c1")(inputs)
    x = Scale(name="scale")(x)
    x = keras.layers.Conv2D(16, 3, name="c2")(x)
    outputs = keras.layers.Dense(4, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    small = tf_precrop.prune(model, flops=0.5, custom_rules={Scale: "passthrough"})
    assert small.get_layer("c1").filters < 16
    assert small(np.zeros((1, 8, 8, 3), "float32")).shape == (1, 4)
