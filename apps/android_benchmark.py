r"""Measures a .tflite model on an Android phone with Google's `benchmark_model`.

Pushes the model and the prebuilt `benchmark_model` binary to /data/local/tmp
with adb, runs it, and prints (or writes) the same Markdown table as
`python -m apps.benchmark`. Step-by-step guide: docs/android.md.

Example:

    python -m apps.android_benchmark --tflite=small.tflite \
        --benchmark_binary=$HOME/Downloads/android_aarch64_benchmark_model \
        --num_threads=4 --out=phone.md
"""

import sys

from absl import app
from absl import flags

from tf_precrop.export import android
from tf_precrop.export import latency

flags.DEFINE_string("tflite", None, "The .tflite model to measure.", required=True)
flags.DEFINE_string("benchmark_binary", None, "Local benchmark_model binary built for the phone's ABI "
                    "(e.g. android_aarch64_benchmark_model).", required=True)
flags.DEFINE_string("serial", None, "Device serial (see `adb devices`); default: the only connected device.")
flags.DEFINE_integer("num_threads", 1, "benchmark_model --num_threads.", lower_bound=1)
flags.DEFINE_integer("warmup_runs", 10, "benchmark_model --warmup_runs.", lower_bound=0)
flags.DEFINE_integer("num_runs", 100, "benchmark_model --num_runs.", lower_bound=1)
flags.DEFINE_string("adb", "adb", "adb executable: a name on PATH or a path.")
flags.DEFINE_string("out", None, "Also write the table (and the raw log) to this Markdown file.")

FLAGS = flags.FLAGS


def main(argv):
    del argv
    try:
        result = android.run_on_device(
            FLAGS.tflite, FLAGS.benchmark_binary, serial=FLAGS.serial, num_threads=FLAGS.num_threads,
            warmup_runs=FLAGS.warmup_runs, num_runs=FLAGS.num_runs, adb=FLAGS.adb)
    except (android.AdbError, FileNotFoundError, ValueError) as err:
        sys.exit(f"android_benchmark: {err}")
    table = latency.format_table([result])
    print(f"Device {result['serial']}:\n{table}")
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            f.write(f"# benchmark_model on device {result['serial']}\n\n{table}\n\n"
                    f"<details><summary>raw log</summary>\n\n```\n{result['log'].strip()}\n```\n</details>\n")


if __name__ == "__main__":
    app.run(main)
