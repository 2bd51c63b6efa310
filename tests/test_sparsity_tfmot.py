"""TF-MOT arm: fixed masks through fit, strip, TFLite, twins, and import isolation."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_precrop import sparsity
from tests.test_sparsity_masks import tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kernels_of(tf_keras_model):
    """``{key: kernel array}`` of a stripped tf_keras model, keyed like the masks."""
    out = {}
    for layer in tf_keras_model.layers:
        name = layer.__class__.__name__
        if name == "DepthwiseConv2D":
            out[f"{layer.name}/kernel"] = layer.depthwise_kernel.numpy()
        elif name == "SeparableConv2D":
            out[f"{layer.name}/depthwise_kernel"] = layer.depthwise_kernel.numpy()
            out[f"{layer.name}/pointwise_kernel"] = layer.pointwise_kernel.numpy()
        elif hasattr(layer, "kernel"):
            out[f"{layer.name}/kernel"] = layer.kernel.numpy()
    return out


def test_masks_fixed_through_fit_strip_and_tflite():
    from ai_edge_litert.interpreter import Interpreter

    model = tiny_model()
    masks = sparsity.erk(model, density=0.3, seed=1)
    pruned = sparsity.to_tfmot(model, masks)
    wrappers = [layer for layer in pruned.layers if layer.__class__.__name__ == "PruneLowMagnitude"]
    assert sorted(w.layer.name for w in wrappers) == ["c1", "dw", "fc", "sep", "tr"]
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((12, 16, 16, 3), dtype=np.float32)
    y = rng.integers(0, 10, 12)
    before = {w.layer.name: [v.numpy().copy() for v in w.layer.trainable_weights] for w in wrappers}
    pruned.fit(x, y, batch_size=4, epochs=1, callbacks=sparsity.callbacks(), verbose=0)  # 3 steps
    final = sparsity.strip(pruned)
    assert [layer.__class__.__name__ for layer in final.layers] == [
        "InputLayer", "Conv2D", "BatchNormalization", "ReLU", "DepthwiseConv2D", "SeparableConv2D",
        "Add", "Conv2DTranspose", "GlobalAveragePooling2D", "Dense"]
    kernels = _kernels_of(final)
    assert sorted(kernels) == sorted(masks)
    for key, m in masks.items():
        w = kernels[key]
        assert np.array_equal(w == 0, m == 0), key  # zeros exactly where the mask put them
        assert np.count_nonzero(w) == int(m.sum()), key
    by_name = {w.layer.name: w.layer for w in wrappers}
    changed = [n for n, ws in before.items() if not np.array_equal(ws[0], by_name[n].trainable_weights[0].numpy())]
    assert changed  # training did update the kept weights
    tflite = tf.lite.TFLiteConverter.from_keras_model(final).convert()
    interp = Interpreter(model_content=tflite)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.set_tensor(inp["index"], x[:1])
    interp.invoke()
    np.testing.assert_allclose(interp.get_tensor(out["index"]), final(x[:1]).numpy(), atol=1e-4)


def test_twin_of_nested_model_with_ops_and_custom_layers():
    convnext = keras.applications.ConvNeXtTiny(input_shape=(32, 32, 3), weights=None, include_top=False)
    inp = keras.Input((32, 32, 3))
    feats = keras.layers.GlobalAveragePooling2D(name="pool")(convnext(inp))
    model = keras.Model(inp, keras.layers.Dense(4, name="head")(feats), name="transfer")
    twin = sparsity.to_tf_keras(model)  # checks outputs against the Keras 3 model
    assert [layer.name for layer in twin.layers[1:]] == ["convnext_tiny", "pool", "head"]
    inner = {layer.__class__.__name__ for layer in twin.layers[1].layers}
    assert {"LayerScale", "Lambda", "Sequential"} <= inner  # custom twin, `x + y` op, nested block
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(twin(x).numpy(), model(x).numpy(), atol=1e-4)


def test_to_tfmot_errors():
    model = tiny_model()
    with pytest.raises(ValueError) as info:
        sparsity.to_tfmot(model, {"nope/kernel": np.ones(3)})
    assert str(info.value) == "`masks` has keys that are not prunable kernels of the model: ['nope/kernel']"
    with pytest.raises(TypeError,
                       match=r"^`model` must be a Keras 3 model \(keras.Model\)\. Received: model=3 of type int$"):
        sparsity.to_tfmot(3, {})


def _run(code):
    env = sparsity.clean_env()
    env["PYTHONPATH"] = ROOT
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_importing_tf_precrop_loads_neither_tfmot_nor_tf_keras():
    out = _run("""
        import os, sys
        import tf_precrop, tf_precrop.sparsity
        print(sorted(m for m in sys.modules if m.startswith(("tensorflow_model_optimization", "tf_keras"))))
        print(os.environ.get("TF_USE_LEGACY_KERAS"))
    """)
    assert out.split("\n")[:2] == ["[]", "None"]


def test_keras3_still_works_after_tfmot_in_same_process():
    out = _run("""
        import os, sys
        import numpy as np, keras, tf_precrop
        from tf_precrop import sparsity
        from tests.test_sparsity_masks import tiny_model
        x = np.random.rand(8, 16, 16, 3).astype("float32"); y = np.random.randint(0, 10, 8)
        def keras3_round():
            m = tiny_model(); m.compile("sgd", "sparse_categorical_crossentropy")
            m.fit(x, y, epochs=1, verbose=0)
            small = tf_precrop.crop(m, flops=0.5)
            small.compile("sgd", "sparse_categorical_crossentropy"); small.fit(x, y, epochs=1, verbose=0)
            return type(m).__module__.split(".")[0], type(small).__module__.split(".")[0]
        print(keras3_round())
        m = tiny_model()
        pruned = sparsity.to_tfmot(m, sparsity.uniform(m, flops=0.5))
        pruned.compile("sgd", "sparse_categorical_crossentropy")
        pruned.fit(x, y, epochs=1, verbose=0, callbacks=sparsity.callbacks())
        print(type(pruned).__module__.split(".")[0], "tensorflow_model_optimization" in sys.modules)
        print(keras3_round())
        print(os.environ.get("TF_USE_LEGACY_KERAS"), "TF_USE_LEGACY_KERAS" in sparsity.clean_env())
    """)
    lines = out.strip().split("\n")[-4:]
    assert lines == ["('keras', 'keras')", "tf_keras True", "('keras', 'keras')", "None False"]


def test_nested_model_masks_survive_fit_and_strip():
    inner_in = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inner_in)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    backbone = keras.Model(inner_in, keras.layers.GlobalAveragePooling2D(name="gap")(h), name="backbone")
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(backbone(inp)), name="outer")
    masks = sparsity.uniform(model, density=0.5, seed=0)
    assert sorted(masks) == ["backbone/conv/kernel", "backbone/dw/kernel", "head/kernel"]
    pruned = sparsity.to_tfmot(model, masks)
    pruned.compile("sgd", "mse")
    x = np.random.default_rng(1).random((4, 8, 8, 3), dtype=np.float32)
    pruned.fit(x, np.ones((4, 3)), batch_size=2, verbose=0, callbacks=sparsity.callbacks())
    final = sparsity.strip(pruned)
    inner = final.get_layer("backbone")
    got = {"backbone/conv/kernel": inner.get_layer("conv").kernel.numpy(),
           "backbone/dw/kernel": inner.get_layer("dw").depthwise_kernel.numpy(),
           "head/kernel": final.get_layer("head").kernel.numpy()}
    for key, m in masks.items():
        assert np.array_equal(got[key] == 0, m == 0), key
