"""tf_precrop: structured pruning at initialization (PreCrop / PreConfig) for Keras 3."""

from setuptools import find_packages, setup

setup(
    name="tf_precrop",
    version="0.1.0",
    description="Structured pruning at initialization for Keras 3: narrower dense models from a convex program.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_precrop", "tf_precrop.*", "apps", "benchmarks"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.5",
        "tf_keras>=2.16",
        "tensorflow-model-optimization>=0.8",
        "cvxpy>=1.5",
        "scipy>=1.10",
        "numpy>=1.24",
        "tensorflow-datasets>=4.9",
        "importlib_resources>=6.0",
        "absl-py>=1.4",
        "ai-edge-litert>=1.0",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=8.0", "pytest-xdist>=3.5", "hypothesis>=6.100", "keras-hub>=0.32"]},
    license="Apache-2.0",
)
