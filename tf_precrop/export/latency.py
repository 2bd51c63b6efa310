"""On-CPU latency of .tflite files with the LiteRT interpreter (``ai_edge_litert``).

`benchmark` measures one file. `benchmark_interleaved` measures several in
rounds (a few runs of each file per round), so that a burst of background load
on a shared machine hits every model alike and latency ratios between them
stay meaningful. `format_table` renders results (also those parsed from
Android's ``benchmark_model``) as one Markdown table.
"""

import os
import time

import numpy as np

from tf_precrop import _extras

litert = _extras.require("ai_edge_litert.interpreter", "tf_precrop.export")

# Columns of `format_table`: (key, header, format).
TABLE_COLUMNS = (
    ("name", "model", "{}"),
    ("num_threads", "threads", "{}"),
    ("size_bytes", "file KB", "{:.1f}"),
    ("init_ms", "init ms", "{:.2f}"),
    ("first_run_ms", "first run ms", "{:.3f}"),
    ("mean_ms", "mean ms", "{:.3f}"),
    ("p50_ms", "p50 ms", "{:.3f}"),
    ("p95_ms", "p95 ms", "{:.3f}"),
    ("std_ms", "std ms", "{:.3f}"),
    ("min_ms", "min ms", "{:.3f}"),
    ("num_runs", "runs", "{}"),
)


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")


class _Runner:
    """One loaded interpreter with a fixed random input."""

    def __init__(self, path, num_threads, seed):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No .tflite file at {path!r}")
        self.path = path
        start = time.perf_counter()
        self.interp = litert.Interpreter(model_path=path, num_threads=num_threads)
        self.interp.allocate_tensors()
        self.init_ms = (time.perf_counter() - start) * 1e3
        rng = np.random.default_rng(seed)
        for detail in self.interp.get_input_details():
            if np.issubdtype(detail["dtype"], np.floating):
                x = rng.random(detail["shape"]).astype(detail["dtype"])
            else:
                info = np.iinfo(detail["dtype"])
                x = rng.integers(info.min, info.max, detail["shape"], endpoint=True).astype(detail["dtype"])
            self.interp.set_tensor(detail["index"], x)
        self.first_run_ms = self.invoke()

    def invoke(self):
        start = time.perf_counter()
        self.interp.invoke()
        return (time.perf_counter() - start) * 1e3


def summarize(latencies_ms):
    """Statistics of per-run latencies.

    Args:
        latencies_ms: Latencies of the timed runs, in milliseconds.

    Returns:
        A dict with ``mean_ms``, ``p50_ms``, ``p95_ms``, ``std_ms``,
        ``min_ms``, ``max_ms`` (floats) and ``num_runs``.

    Raises:
        ValueError: If ``latencies_ms`` is empty.

    Example:
        >>> summarize([1.0, 2.0, 3.0])["p50_ms"]
        2.0
    """
    t = np.asarray(latencies_ms, dtype="float64")
    if t.size == 0:
        raise ValueError("`latencies_ms` is empty: no timed runs.")
    return {
        "mean_ms": float(t.mean()),
        "p50_ms": float(np.percentile(t, 50)),
        "p95_ms": float(np.percentile(t, 95)),
        "std_ms": float(t.std()),
        "min_ms": float(t.min()),
        "max_ms": float(t.max()),
        "num_runs": int(t.size),
    }


def benchmark_interleaved(paths, num_threads=1, warmup_runs=10, num_runs=100, rounds=10, seed=0):
    """Latency of several .tflite files, measured alternately in rounds.

    Every file is loaded once (init time), run once (first run), warmed up,
    then each round runs every file ``num_runs / rounds`` times in turn.
    Background load therefore affects all files alike and their latency
    ratios are robust to it.

    Args:
        paths: .tflite files.
        num_threads: LiteRT interpreter threads.
        warmup_runs: Untimed runs of each file after the first run.
        num_runs: Timed runs of each file in total (a multiple of ``rounds``
            is not required; the remainder goes to the first rounds).
        rounds: Number of rounds the timed runs are spread over.
        seed: Seed of the random inputs.

    Returns:
        One dict per path, in order, as `benchmark` returns.

    Raises:
        ValueError: On a count below its minimum (threads, rounds and runs
            >= 1, warm-up runs >= 0) or ``rounds > num_runs``.
        FileNotFoundError: If a path does not exist.

    Example:
        >>> dense, small = benchmark_interleaved(["dense.tflite", "small.tflite"])
        >>> small["p50_ms"] / dense["p50_ms"]
        0.31
    """
    _check_count("num_threads", num_threads, 1)
    _check_count("warmup_runs", warmup_runs, 0)
    _check_count("num_runs", num_runs, 1)
    _check_count("rounds", rounds, 1)
    if rounds > num_runs:
        raise ValueError(f"`rounds` must be <= `num_runs`. Received: rounds={rounds}, num_runs={num_runs}")
    runners = [_Runner(p, num_threads, seed) for p in paths]
    for runner in runners:
        for _ in range(warmup_runs):
            runner.invoke()
    times = [[] for _ in runners]
    for r in range(rounds):
        n = num_runs // rounds + (1 if r < num_runs % rounds else 0)
        for runner, t in zip(runners, times):
            t.extend(runner.invoke() for _ in range(n))
    return [
        {
            "path": runner.path,
            "size_bytes": os.path.getsize(runner.path),
            "num_threads": num_threads,
            "warmup_runs": warmup_runs,
            "init_ms": runner.init_ms,
            "first_run_ms": runner.first_run_ms,
            **summarize(t),
        }
        for runner, t in zip(runners, times)
    ]


def benchmark(path, num_threads=1, warmup_runs=10, num_runs=100, seed=0):
    """Latency of one .tflite file on this CPU with the LiteRT interpreter.

    The interpreter (with its default XNNPack delegate) is created and its
    tensors allocated (init time), the model runs once on a random input
    (first run), ``warmup_runs`` more times untimed, then ``num_runs`` timed.

    Args:
        path: The .tflite file.
        num_threads: Interpreter threads.
        warmup_runs: Untimed runs after the first run.
        num_runs: Timed runs.
        seed: Seed of the random input.

    Returns:
        A dict with ``path``, ``size_bytes``, ``num_threads``,
        ``warmup_runs``, ``init_ms``, ``first_run_ms`` and the statistics of
        `summarize` (``mean_ms``, ``p50_ms``, ``p95_ms``, ``std_ms``,
        ``min_ms``, ``max_ms``, ``num_runs``). Times are in milliseconds.

    Raises:
        ValueError: On ``num_threads`` or ``num_runs`` < 1 or
            ``warmup_runs`` < 0.
        FileNotFoundError: If ``path`` does not exist.

    Example:
        >>> stats = benchmark("small.tflite", num_threads=1, warmup_runs=10, num_runs=100)
        >>> stats["p50_ms"] <= stats["p95_ms"]
        True
    """
    return benchmark_interleaved([path], num_threads, warmup_runs, num_runs, rounds=1, seed=seed)[0]


def format_table(rows):
    """A Markdown table of latency results.

    Args:
        rows: Dicts as returned by `benchmark` or
            ``tf_precrop.export.android.parse_benchmark_output``, with an
            optional ``name`` (defaults to the file name of ``path``). Missing
            values are shown as ``-``.

    Returns:
        The table as a string (header, separator, one line per row).

    Example:
        >>> print(format_table([benchmark("small.tflite")]))
        | model | threads | file KB | init ms | ...
    """
    named = [row if row.get("name") is not None else dict(row, name=os.path.basename(row.get("path") or "") or None)
             for row in rows]
    return markdown(named, TABLE_COLUMNS, scale={"size_bytes": 1 / 1024}, text=("name",))


def markdown(rows, columns, *, scale=None, text=()):
    """A Markdown table: one column per ``(key, header, format)``, one line per row.

    Args:
        rows: Dicts; a missing or None value shows as ``-``.
        columns: ``(key, header, format)`` triples.
        scale: ``{key: factor}`` applied before formatting (e.g. bytes to KB).
        text: Keys of left-aligned columns (the others align right).

    Returns:
        The table as a string (header, separator, one line per row).

    Example:
        >>> print(markdown([{"p50_ms": 1.5}], [("p50_ms", "p50 ms", "{:.3f}")]))
    """
    scale = scale or {}
    lines = [
        "| " + " | ".join(header for _, header, _ in columns) + " |",
        "|" + "|".join("---" if key in text else "---:" for key, _, _ in columns) + "|",
    ]
    for row in rows:
        cells = ["-" if row.get(key) is None else fmt.format(row[key] * scale[key] if key in scale else row[key])
                 for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
