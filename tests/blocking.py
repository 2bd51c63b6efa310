"""Runs Python code in a subprocess in which some packages cannot be imported (a meta-path blocker).

"Package X was not imported" is no test of a TF-free install: Keras imports TensorFlow on its own whenever it
is installed (serialization checks ``tf.available``). Blocking the import makes the package as good as
uninstalled for the child process, so what works there works without it.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_BLOCKER = """
import sys


class _Blocker:
    # Makes the listed top-level packages (and their submodules) unimportable.
    blocked = {blocked!r}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
"""


def run_blocked(code, blocked, *, env=None, timeout=300):
    """Runs ``code`` with the ``blocked`` packages unimportable; returns the CompletedProcess.

    With ``tensorflow`` blocked Keras runs on JAX unless ``env`` names another backend. The code's last
    stdout line may be JSON; ``last_json(result)`` reads it.
    """
    child_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    if "tensorflow" in blocked and "KERAS_BACKEND" not in (env or {}):
        # Keras on its default TensorFlow backend cannot start without TensorFlow.
        child_env["KERAS_BACKEND"] = "jax"
    child_env.pop("TF_USE_LEGACY_KERAS", None)
    source = _BLOCKER.format(blocked=tuple(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", source], cwd=ROOT, env=child_env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def last_json(result):
    """The JSON object printed on the last stdout line of a ``run_blocked`` result."""
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
