"""The plan summary labels dense and cropped totals, and FLOPs as 2 x MACs."""

import keras
from keras import layers

import tf_precrop


def _model():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = layers.Conv2D(16, 3, padding="same", name="c2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(4, name="head")(x), name="tiny")


def test_summary_totals_are_labelled():
    plan = tf_precrop.plan(_model(), flops=0.5)
    lines = plan.summary().splitlines()
    macs, flops, params = lines[-4:-1]
    assert macs == (f"MACs:   dense {plan.dense_macs:,} -> cropped {plan.macs:,} "
                    f"(ratio {plan.macs_ratio:.4f})")
    assert flops == f"FLOPs:  dense {2 * plan.dense_macs:,} -> cropped {2 * plan.macs:,} (FLOPs = 2 x MACs)"
    assert params == (f"Params: dense {plan.dense_params:,} -> cropped {plan.params:,} "
                      f"(ratio {plan.params_ratio:.4f})")
    assert lines[-1].startswith("Groups: ")
