"""tf_precrop: structured pruning at initialization (PreCrop / PreConfig) for Keras 3.

`pip install tf_precrop` installs the backend-agnostic core (count, plan, crop, preconfig) with only what it
imports. Everything beside the core line is an extra; importing a part whose extra is missing raises an
ImportError naming it (tf_precrop/_extras.py). The apps/ and benchmarks/ folders are not installed as
packages (their names would collide with other projects): run them from a checkout with `python -m apps.crop`.
"""

from setuptools import find_packages, setup

EXTRAS = {
    # TFLite export and the SynFlow/SNIP/GraSP scores of the sparsity arm (tf.GradientTape).
    "tensorflow": ["tensorflow>=2.16"],
    # The TF-MOT baseline arm: a tf_keras (Keras 2) twin of the model, pruned with TF-MOT.
    "tfmot": ["tensorflow>=2.16", "tf_keras>=2.16", "tensorflow-model-optimization>=0.8"],
    # On-CPU latency of .tflite files (tf_precrop.export.benchmark, calibrate_latency).
    "litert": ["ai-edge-litert>=1.0"],
    # Input pipelines of the apps and benchmarks (tf_precrop.data).
    "data": ["tensorflow>=2.16", "tensorflow-datasets>=4.9", "importlib_resources>=6.0"],
    # Width plots (tf_precrop.report.plot_widths, benchmark figures).
    "plots": ["matplotlib>=3.7"],
    # The JAX backend (KERAS_BACKEND=jax), incl. data-parallel training in apps.train.
    "jax": ["jax>=0.4.30"],
    # keras_hub image backbones (count/plan/crop/preconfig support them).
    "hub": ["keras-hub>=0.32"],
    # The apps (absl flags).
    "apps": ["absl-py>=1.4"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})
EXTRAS["test"] = ["pytest>=8.0", "pytest-xdist>=3.5", "hypothesis>=6.100", "keras-hub>=0.32", "ruff>=0.5"]

setup(
    name="tf_precrop",
    version="0.1.0",
    description="Structured pruning at initialization for Keras 3: narrower dense models from a convex program.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # Only the library: apps/ and benchmarks/ run from the checkout (`python -m apps.crop`).
    packages=find_packages(include=["tf_precrop", "tf_precrop.*"]),
    python_requires=">=3.10",
    install_requires=[
        # The rebuild and graph walk use Keras internals (keras.src...): tested on 3.5 to 3.15.
        "keras>=3.5,<3.16",
        "numpy>=1.24",
        "scipy>=1.10",
        "cvxpy>=1.5",
    ],
    extras_require=EXTRAS,
    license="Apache-2.0",
)
