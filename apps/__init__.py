"""absl-flag front ends over tf_precrop: `python -m apps.crop`, `apps.train`, `apps.compare`.

The method names and helpers shared by apps that cannot import each other (absl flags are
process-global) live here, flag-free, so that `apps.compare` can check its grid without importing
`apps.train`.
"""

from absl import app

STRUCTURED_METHODS = ("dense", "precrop", "preconfig", "uniform_width")
"""Methods that train a physically resized (or the dense) Keras 3 model."""

SPARSE_METHODS = ("synflow", "snip", "grasp", "magnitude", "random", "erk", "optimal",
                  "synflow_random")
"""Unstructured pruning-at-init methods of tf_precrop.sparsity (trained with TF-MOT)."""

METHODS = STRUCTURED_METHODS + SPARSE_METHODS + ("masks",)
"""Every `apps.train --method` ("masks" reads precomputed masks from --masks)."""


def load_latency_model(path):
    """Reads the `--latency_model` JSON file of `apps.crop` and `apps.benchmark`.

    Args:
        path: a file written by `tf_precrop.LatencyModel.to_json()`.

    Returns:
        The `tf_precrop.LatencyModel`.

    Raises:
        absl.app.UsageError: if the file cannot be read or is not a latency model, quoting the path.

    Example:
        >>> load_latency_model("device.json").name
    """
    import tf_precrop  # pylint: disable=g-import-not-at-top  (apps.compare imports this package without it)

    try:
        with open(path) as f:
            return tf_precrop.LatencyModel.from_json(f.read())
    except (OSError, ValueError) as err:
        raise app.UsageError(f"--latency_model: {err}. Received: --latency_model={path}") from None
