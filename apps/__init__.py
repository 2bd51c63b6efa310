"""absl-flag front ends over tf_precrop: `python -m apps.crop`, `apps.train`, `apps.compare`.

The method names live here, flag-free, so that `apps.compare` can check its grid
without importing `apps.train` (absl flags are process-global).
"""

STRUCTURED_METHODS = ("dense", "precrop", "preconfig", "uniform_width")
"""Methods that train a physically resized (or the dense) Keras 3 model."""

SPARSE_METHODS = ("synflow", "snip", "grasp", "magnitude", "random", "erk", "optimal",
                  "synflow_random")
"""Unstructured pruning-at-init methods of tf_precrop.sparsity (trained with TF-MOT)."""

METHODS = STRUCTURED_METHODS + SPARSE_METHODS + ("masks",)
"""Every `apps.train --method` ("masks" reads precomputed masks from --masks)."""
