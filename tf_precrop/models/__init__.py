"""Model builders: CIFAR ResNets, a CIFAR MobileNetV2 and the keras.applications zoo.

Example:
    >>> from tf_precrop import models
    >>> model = models.build("resnet20", input_shape=(28, 28, 1))
    >>> model.get_layer("stage2_block1_conv1").filters
    32
"""

from tf_precrop.models.mobilenet import mobilenet_v2_cifar
from tf_precrop.models.registry import build, canonical_name, names
from tf_precrop.models.resnet import resnet20, resnet32, resnet56

__all__ = ["build", "canonical_name", "mobilenet_v2_cifar", "names", "resnet20", "resnet32", "resnet56"]
