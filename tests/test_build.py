"""Checks that the Bazel BUILD file covers every module, app, benchmark and test.

Pure Python, no Bazel needed: BUILD files are Starlark, whose BUILD dialect is
a subset of Python, so BUILD is evaluated with stub rule functions and a
`glob` that follows Bazel's matching rules.
"""

import builtins
import os
import re
from pathlib import Path

import pytest

# No resolve(): under `bazel test` this is the runfiles tree, which holds BUILD
# and the covered files as the test's data.
ROOT = Path(__file__).parent.parent

# Must each be in the srcs of a py_library or py_binary.
MODULE_PATTERNS = ["tf_precrop/**/*.py", "apps/*.py", "benchmarks/*.py"]
# Must each be in the srcs of a py_test.
TEST_PATTERNS = ["tests/test_*.py"]

RULES = ("py_library", "py_binary", "py_test", "filegroup", "sh_binary", "sh_test")
_STARLARK_BUILTINS = (
    "all", "any", "bool", "dict", "enumerate", "getattr", "hasattr", "int", "len", "list",
    "max", "min", "print", "range", "reversed", "sorted", "str", "tuple", "type", "zip",
)


def glob(root, include, exclude=(), **_):
    """Bazel's glob() for the package at `root`, as sorted relative paths.

    `*` matches within one path segment, a `**` segment any number of
    directories; only files match, and not those inside a subpackage (a
    directory with its own BUILD file), as in Bazel.
    """
    root = Path(root)
    include = [_glob_regex(p) for p in include]
    exclude = [_glob_regex(p) for p in exclude]
    matches = []
    for directory, subdirs, files in os.walk(root):
        # Skip subpackages, VCS data and bazel-* output symlinks.
        subdirs[:] = [
            d for d in subdirs
            if d != ".git"
            and not d.startswith("bazel-")
            and not any((Path(directory, d) / b).is_file() for b in ("BUILD", "BUILD.bazel"))
        ]
        for name in files:
            path = Path(directory, name).relative_to(root).as_posix()
            if any(r.fullmatch(path) for r in include):
                if not any(r.fullmatch(path) for r in exclude):
                    matches.append(path)
    return sorted(matches)


def _glob_regex(pattern):
    segments = pattern.split("/")
    parts = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            parts.append(r"[^/]+(?:/[^/]+)*" if last else r"(?:[^/]+/)*")
        else:
            parts.append("[^/]*".join(map(re.escape, segment.split("*"))) + ("" if last else "/"))
    return re.compile("".join(parts))


def load_build(path):
    """Evaluates a BUILD file; returns {target name: (rule kind, attributes)}."""
    targets = {}

    def rule(kind):
        def declare(name, **attrs):
            assert name not in targets, f"{path}: target {name!r} is declared twice"
            targets[name] = (kind, attrs)

        return declare

    env = {
        "__builtins__": {n: getattr(builtins, n) for n in _STARLARK_BUILTINS},
        "glob": lambda include, exclude=(), **kw: glob(path.parent, include, exclude, **kw),
        "load": lambda *args, **kwargs: None,
        "package": lambda **kwargs: None,
        "exports_files": lambda *args, **kwargs: None,
        **{kind: rule(kind) for kind in RULES},
    }
    exec(compile(path.read_text(), str(path), "exec"), env)
    return targets


def srcs_of(targets, *kinds):
    """Files in the srcs of every target of the given kinds ("//:a.py" -> "a.py")."""
    return {
        re.sub(r"^(//)?:", "", src)
        for kind, attrs in targets.values()
        if kind in kinds
        for src in attrs.get("srcs", [])
    }


@pytest.fixture(scope="module")
def targets():
    build = ROOT / "BUILD"
    assert build.is_file(), f"No BUILD file at {build}"
    return load_build(build)


def test_every_module_is_in_a_library_or_binary(targets):
    covered = srcs_of(targets, "py_library", "py_binary")
    missing = [f for f in glob(ROOT, MODULE_PATTERNS) if f not in covered]
    assert not missing, (
        "Not in the srcs of any py_library/py_binary in BUILD:\n  " + "\n  ".join(missing)
    )


def test_every_test_file_has_a_py_test(targets):
    covered = srcs_of(targets, "py_test")
    missing = [f for f in glob(ROOT, TEST_PATTERNS) if f not in covered]
    assert not missing, "No py_test in BUILD has these in its srcs:\n  " + "\n  ".join(missing)


def test_binaries_and_tests_have_a_main_in_srcs(targets):
    # Bazel only checks this when analysing py_binary/py_test, which needs
    # @rules_cc and so cannot run offline; check it here instead.
    bad = []
    for name, (kind, attrs) in targets.items():
        if kind in ("py_binary", "py_test"):
            main = attrs.get("main", name + ".py")  # Bazel's default main
            srcs = [re.sub(r"^(//)?:", "", s) for s in attrs.get("srcs", [])]
            if not any(s == main or s.endswith("/" + main) for s in srcs):
                bad.append(f"{name}: main {main!r} not in srcs {srcs}")
    assert not bad, "\n".join(bad)


def test_glob_follows_bazel_semantics(tmp_path):
    for path in ["a.py", "pkg/b.py", "pkg/sub/c.py", "pkg/sub/d.txt", "other/BUILD", "other/e.py"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    assert glob(tmp_path, ["*.py"]) == ["a.py"]
    assert glob(tmp_path, ["pkg/*.py"]) == ["pkg/b.py"]
    assert glob(tmp_path, ["pkg/**/*.py"]) == ["pkg/b.py", "pkg/sub/c.py"]
    # other/ has a BUILD file: a subpackage, outside this package's globs.
    assert glob(tmp_path, ["**/*.py"], exclude=["pkg/sub/*"]) == ["a.py", "pkg/b.py"]
    assert glob(tmp_path, ["pkg/**"]) == ["pkg/b.py", "pkg/sub/c.py", "pkg/sub/d.txt"]
    assert glob(tmp_path, ["missing/*.py"]) == []


def test_uncovered_files_are_reported(tmp_path):
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "crop.py").write_text("")
    (tmp_path / "apps" / "new_tool.py").write_text("")
    (tmp_path / "BUILD").write_text(
        'package(default_visibility = ["//visibility:public"])\n'
        '[py_binary(name = f[:-3], srcs = [f], main = f) for f in glob(["apps/c*.py"])]\n'
    )
    targets = load_build(tmp_path / "BUILD")
    assert list(targets) == ["apps/crop"]
    covered = srcs_of(targets, "py_library", "py_binary")
    assert [f for f in glob(tmp_path, ["apps/*.py"]) if f not in covered] == ["apps/new_tool.py"]
