"""The core line (count, plan, crop, preconfig) runs on the JAX backend with TensorFlow unimportable."""

from tests.blocking import last_json, run_blocked

# A small hand-built CNN: conv-BN-ReLU, a residual add (a tied group), depthwise conv, GAP, dense.
CORE_ON_JAX = """
import json
import sys

import keras
import numpy as np
from keras import layers

import tf_precrop

assert keras.backend.backend() == "jax", keras.backend.backend()
inputs = keras.Input((16, 16, 3))
x = layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
x = layers.BatchNormalization(name="stem_bn")(x)
x = layers.ReLU()(x)
y = layers.Conv2D(32, 1, name="expand")(x)
y = layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
y = layers.Conv2D(16, 1, name="project")(y)
x = layers.Add()([x, y])
x = layers.GlobalAveragePooling2D()(x)
outputs = layers.Dense(4, name="head")(x)
model = keras.Model(inputs, outputs, name="tiny")

report = tf_precrop.count(model)
plan = tf_precrop.plan(model, flops=0.5, round_to=4)
small = tf_precrop.crop(model, plan)
assert small.count_params() == plan.params, (small.count_params(), plan.params)
assert tf_precrop.count(small).macs == plan.macs
grown = tf_precrop.preconfig(model, flops=1.0)
rng = np.random.default_rng(0)
x_train, y_train = rng.normal(size=(32, 16, 16, 3)).astype("float32"), rng.integers(0, 4, 32)
small.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = small.fit(x_train, y_train, batch_size=8, epochs=1, verbose=0)
loss = history.history["loss"][-1]
assert np.isfinite(loss)
print(json.dumps({"backend": keras.backend.backend(), "dense_macs": report.macs, "macs_ratio": plan.macs_ratio,
                  "params": small.count_params(), "grown_params": grown.count_params(), "loss": float(loss),
                  "tensorflow_loaded": "tensorflow" in sys.modules}))
"""


def test_core_runs_on_jax_without_tensorflow():
    out = last_json(run_blocked(CORE_ON_JAX, ["tensorflow", "tf_keras", "tensorflow_model_optimization"]))
    assert out["backend"] == "jax"
    assert not out["tensorflow_loaded"]
    assert 0.4 < out["macs_ratio"] <= 0.5
    assert out["params"] > 0 and out["grown_params"] > 0


def test_tensorflow_is_really_blocked():
    result = run_blocked("import tensorflow", ["tensorflow"])
    assert result.returncode != 0
    assert "No module named 'tensorflow' (blocked by the test)" in result.stderr

