"""Optional dependencies: import one, or fail with the pip extra that installs it.

The core (count, plan, crop, preconfig) needs only keras, numpy, scipy and cvxpy. Everything beside the core
line needs a package from an extra of ``setup.py``; importing such a part without it raises an ImportError
that says which extra to install, instead of a bare ``No module named ...`` deep inside a traceback.
"""

from __future__ import annotations

import importlib

#: Top-level package -> the ``setup.py`` extra that installs it.
EXTRA_OF_PACKAGE = {
    "tensorflow": "tensorflow",
    "ai_edge_litert": "litert",
    "tf_keras": "tfmot",
    "tensorflow_model_optimization": "tfmot",
    "tensorflow_datasets": "data",
    "importlib_resources": "data",
    "matplotlib": "plots",
    "jax": "jax",
    "keras_hub": "hub",
}


def require(module: str, feature: str):
    """Imports ``module``; if it is missing, raises an ImportError naming the extra that installs it.

    Args:
        module: dotted module name, e.g. ``"tensorflow"`` or ``"ai_edge_litert.interpreter"``.
        feature: what needs it, for the message, e.g. ``"tf_precrop.export"``.

    Returns:
        The imported module.

    Raises:
        ImportError: if the module (or one of its own dependencies) cannot be imported; the message names
            the extra, e.g. "pip install tf_precrop[tensorflow]".
        KeyError: if ``module``'s top-level package has no extra (a bug in the caller).

    Example:
        >>> tf = require("tensorflow", "tf_precrop.export")
    """
    extra = EXTRA_OF_PACKAGE[module.split(".")[0]]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{feature} needs the optional package `{module.split('.')[0]}`, which could not be imported "
            f"({err}). Install it with: pip install tf_precrop[{extra}]"
        ) from err
