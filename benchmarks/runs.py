"""Run bookkeeping shared by the accuracy benchmarks (accuracy, granularity, confirmatory).

Flag-free: the data preparation, the archive of finished runs (restore before a grid,
archive after), the child-process environment and the provenance of a record (git
commit, machine load).
"""

import json
import os
import shutil
import subprocess


def prepare_fashion_mnist(data_dir):
    """Prepares Fashion-MNIST once, before the children would race to do it."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from tf_precrop import data  # pylint: disable=g-import-not-at-top

    if not tfds.builder("fashion_mnist", data_dir=data_dir).is_prepared():
        print("Preparing Fashion-MNIST from the Debian files ...", flush=True)
        data.prepare_fashion_mnist_offline(data_dir)


def child_env():
    """The environment of a child run: ours without TF_USE_LEGACY_KERAS.

    Importing TF-MOT sets TF_USE_LEGACY_KERAS=1; a child inheriting it would get tf_keras
    as `tf.keras`. (The same as `apps.compare.child_env`, which cannot be imported next to
    `apps.common`: both define absl flags of the same names.)
    """
    return {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}


def git_commit():
    """The commit of the working tree ("+dirty" when it has uncommitted changes), or None."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def restore_runs(names, archive_dir, result_path, recipe, label="accuracy"):
    """Copies archived results into their run directories (a grid then skips them).

    Args:
        names: run names.
        archive_dir: directory of archived `<name>.json` files.
        result_path: function name -> where that run's results.json belongs.
        recipe: {flag: value} the archived run must have been made with (its "flags");
            an archived run with another recipe is not restored.
        label: prefix of the messages.

    Returns:
        How many runs were restored.
    """
    restored = 0
    for name in names:
        archived = os.path.join(archive_dir, f"{name}.json")
        target = result_path(name)
        if not os.path.exists(archived) or os.path.exists(target):
            continue
        with open(archived) as f:
            flags_used = json.load(f).get("flags", {})
        other = {k: flags_used.get(k) for k, v in recipe.items() if flags_used.get(k) != v}
        if other:
            print(f"{label}: archived {name} has another recipe ({other}); not restored")
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(archived, target)
        restored += 1
    return restored


def archive_runs(names, archive_dir, result_path):
    """Copies every finished run's results.json into `archive_dir` (small, committed)."""
    os.makedirs(archive_dir, exist_ok=True)
    for name in names:
        if os.path.exists(result_path(name)):
            shutil.copyfile(result_path(name), os.path.join(archive_dir, f"{name}.json"))
