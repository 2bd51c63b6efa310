"""One model of every keras.applications CNN family, at a small input: crop(flops=0.5) must build, run,
predict its params exactly, land in [0.45, 0.50] of the MACs and leave the original untouched."""

import keras
import numpy as np
import pytest

import tf_precrop

FAMILIES = [
    ("ResNet50", (64, 64, 3)),
    ("ResNet50V2", (64, 64, 3)),
    ("VGG16", (32, 32, 3)),
    ("MobileNet", (64, 64, 3)),
    ("MobileNetV2", (64, 64, 3)),
    ("MobileNetV3Small", (64, 64, 3)),
    ("EfficientNetB0", (64, 64, 3)),
    ("EfficientNetV2B0", (64, 64, 3)),
    ("DenseNet121", (64, 64, 3)),
    ("InceptionV3", (75, 75, 3)),
    ("InceptionResNetV2", (75, 75, 3)),
    ("Xception", (71, 71, 3)),
    ("NASNetMobile", (64, 64, 3)),
    ("ConvNeXtTiny", (32, 32, 3)),
]


@pytest.mark.parametrize("name,shape", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_zoo_crop(name, shape):
    kwargs = {"include_top": False, "pooling": "avg"} if name == "NASNetMobile" else {}
    model = getattr(keras.applications, name)(input_shape=shape, weights=None, classes=10, **kwargs)
    config = model.get_config()
    first_weights = [w.copy() for w in model.get_weights()[:5]]
    plan = tf_precrop.plan(model, flops=0.5)
    small = tf_precrop.crop(model, plan, seed=0)
    out = small(np.zeros((1,) + shape, "float32"))
    assert tuple(out.shape) == (1, *model.output_shape[1:])
    assert small.count_params() == plan.params
    assert 0.45 <= plan.macs_ratio <= 0.50
    assert model.get_config() == config
    for before, after in zip(first_weights, model.get_weights()[:5]):
        np.testing.assert_array_equal(before, after)
    keras.backend.clear_session()
