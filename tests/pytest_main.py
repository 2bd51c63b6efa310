"""Entry point of every Bazel py_test: runs pytest on the given test files."""

import sys

import pytest

if __name__ == "__main__":
    # Runfiles trees are not for writing: skip pytest's .pytest_cache.
    sys.exit(pytest.main(["-p", "no:cacheprovider", *sys.argv[1:]]))
