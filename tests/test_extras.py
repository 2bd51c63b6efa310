"""Packaging: the core needs only its install_requires; a part whose extra is missing names the extra."""

import ast
import re
import sys
from pathlib import Path

import pytest

from tests.blocking import ROOT, run_blocked
from tf_precrop import _extras

# Top-level imports the core may use: setup.py's install_requires (import names), the stdlib and itself.
CORE_REQUIRES = {"keras", "numpy", "scipy", "cvxpy"}
# Rules for an optional zoo, loaded only when a model holds that zoo's layers (so the package is installed).
LAZY_INTEGRATIONS = {"tf_precrop/graph/keras_hub_rules.py": {"keras_hub"}}
CORE_FILES = sorted([*ROOT.glob("tf_precrop/*.py"), *ROOT.glob("tf_precrop/graph/*.py"),
                     *ROOT.glob("tf_precrop/models/*.py")])


def _imported_packages(path):
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_core_imports_only_its_install_requires():
    allowed = CORE_REQUIRES | set(sys.stdlib_module_names) | {"tf_precrop", "__future__"}
    outside = {f"{p.relative_to(ROOT)}: {name}" for p in CORE_FILES for name in _imported_packages(p)
               if name not in allowed | LAZY_INTEGRATIONS.get(str(p.relative_to(ROOT)), set())}
    assert not outside, "core modules import packages beside install_requires (use tf_precrop._extras)"


def test_setup_requires_match_core_and_pin_keras():
    setup_py = (ROOT / "setup.py").read_text(encoding="utf-8")
    install = re.search(r"install_requires=\[(.*?)\]", setup_py, re.S).group(1)
    names = set(re.findall(r'"([A-Za-z0-9_.-]+)[<>=]', install))
    assert names == CORE_REQUIRES
    assert '"keras>=3.5,<3.16"' in install
    # Every package _extras can ask for is installed by the extra it names.
    for package, extra in _extras.EXTRA_OF_PACKAGE.items():
        assert f'"{extra}": [' in setup_py, extra
    assert 'find_packages(include=["tf_precrop", "tf_precrop.*"])' in setup_py


def test_require_names_the_extra_in_process():
    with pytest.raises(ImportError, match=re.escape("pip install tf_precrop[plots]")):
        _extras.require("matplotlib.no_such_module", "tf_precrop.report.plot_widths")


@pytest.mark.parametrize("blocked, code, extra", [
    ("tensorflow", "import tf_precrop.export", "tensorflow"),
    ("tensorflow", "import tf_precrop.sparsity", "tensorflow"),
    ("tensorflow_datasets", "import tf_precrop.data", "data"),
    ("tensorflow_model_optimization", "from tf_precrop.sparsity import tfmot_bridge; tfmot_bridge._modules()",
     "tfmot"),
    ("matplotlib", "from tf_precrop import report; report.plot_widths({}, 'x.png')", "plots"),
])
def test_missing_extra_names_it(blocked, code, extra):
    result = run_blocked(code, [blocked])
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: "), result.stderr[-2000:]
    assert f"needs the optional package `{blocked}`" in last
    assert last.endswith(f"Install it with: pip install tf_precrop[{extra}]")


def test_top_level_import_needs_no_extra():
    blocked = ["tensorflow", "tensorflow_datasets", "tensorflow_model_optimization", "tf_keras",
               "ai_edge_litert", "matplotlib", "keras_hub"]
    result = run_blocked("import tf_precrop, tf_precrop.report; print(tf_precrop.__version__)", blocked,
                         env={"KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr[-3000:]
