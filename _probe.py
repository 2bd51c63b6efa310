import numpy as np, tf_precrop
from tf_precrop import sparsity
model = tf_precrop.models.resnet20()
rng = np.random.default_rng(0)
data = [(rng.random((32, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 32))]
masks = sparsity.snip(model, density=0.01, batches=data)
snip = sorted(k for k, d in masks.densities().items() if d == 0)
weights = sum(k.weights for k in sparsity.prunable_kernels(model))
print("SNIP", snip, sparsity.masked_cost(model, masks)["density"], np.floor(0.01 * weights) / weights)
m = tf_precrop.models.resnet20(input_shape=(16, 16, 3), width=8)
plan = tf_precrop.preconfig_plan(m, flops=1.0, max_ratio=2.0)
print("RESNET", plan.macs_ratio, [(g.dense_width, g.width) for g in plan.groups if g.fixed is None])
