"""Shared pytest setup: quiet TensorFlow, deterministic seeds, absl flags reset per test, the JAX subset."""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.pop("TF_USE_LEGACY_KERAS", None)

# Core tests on small hand-built models that must pass on every Keras backend. `.ci/run` runs them a second
# time with KERAS_BACKEND=jax (`python -m pytest -m backend_agnostic tests`); mark a single test with
# `@pytest.mark.backend_agnostic` to add it. Keep keras.applications models out: they build 10-30x slower on
# CPU JAX, and the JAX pass is capped at about 5 minutes.
BACKEND_AGNOSTIC_FILES = ("test_graph_groups.py", "test_solver.py", "test_api_errors.py", "test_plan_summary.py")


def pytest_configure(config):
    config.addinivalue_line("markers", "backend_agnostic: core test that .ci/run repeats with KERAS_BACKEND=jax")


def pytest_collection_modifyitems(config, items):
    del config  # unused
    for item in items:
        if item.path.name in BACKEND_AGNOSTIC_FILES:
            item.add_marker("backend_agnostic")


@pytest.fixture
def fresh_flags():
    """absl flags unparsed before and restored after the test (the apps' tests parse their own argv)."""
    from absl import flags  # pylint: disable=g-import-not-at-top
    from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top

    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        yield
    flags.FLAGS.unparse_flags()
