"""Statistics of the accuracy benchmarks: Welch differences, their table, multiple comparisons.

Pure functions over the rows of `apps.compare.collect` (dicts with method, flops_budget,
round_to and test_accuracy), free of absl flags so tests can import them.
"""

import math

import numpy as np
from scipy import stats


def welch(a, b):
    """Mean difference a - b, its standard error, Welch's two-sided p-value and 95% interval.

    Returns:
        (diff, se, p, (low, high)); se, p and the interval are NaN with fewer than two
        values on a side, p and the interval also when both sides have no spread.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = a.mean() - b.mean()
    nan = float("nan")
    if len(a) < 2 or len(b) < 2:
        return diff, nan, nan, (nan, nan)
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    if se == 0:
        return diff, se, nan, (nan, nan)
    test = stats.ttest_ind(a, b, equal_var=False)
    interval = test.confidence_interval(0.95)
    return diff, se, float(test.pvalue), (float(interval.low), float(interval.high))


def accuracies(rows, method, budget, round_to=1):
    """Test accuracies of the rows of one method at one budget and width multiple."""
    return [r["test_accuracy"] for r in rows if r["method"] == method and
            r["flops_budget"] == budget and r["round_to"] == round_to]


def _pair_samples(rows, pairs):
    """(label, budget, a, b) per pair: the accuracies of both sides (either may be empty)."""
    return [(label, budget, accuracies(rows, *side_a), accuracies(rows, *side_b))
            for label, side_a, side_b, budget in pairs]


def comparison_table(rows, pairs):
    """Markdown rows "A vs B": accuracy difference, its SE and 95% interval, Welch p, verdict.

    The interval says what the seeds rule out even when the verdict is "no": a gap
    outside it is unlikely at this recipe.
    """
    lines = ["| comparison | FLOPs budget | n (A/B) | accuracy difference (pp) | SE (pp) | "
             "95% interval (pp) | Welch p | beyond seed noise (p < 0.05)? |",
             "|---|---|---|---|---|---|---|---|"]
    for label, budget, a, b in _pair_samples(rows, pairs):
        if not a or not b:
            lines.append(f"| {label} | {budget:g} | {len(a)}/{len(b)} | not run | | | | |")
            continue
        diff, se, p, (low, high) = welch(a, b)
        verdict = "n < 2" if np.isnan(p) else ("yes" if p < 0.05 else "no")
        lines.append(f"| {label} | {budget:g} | {len(a)}/{len(b)} | {100 * diff:+.2f} | "
                     f"{100 * se:.2f} | [{100 * low:+.2f}, {100 * high:+.2f}] | {p:.3f} | {verdict} |")
    return lines


def multiple_comparisons_line(rows, pairs):
    """How many of the table's p-values survive Benjamini-Hochberg at a 5% false discovery rate."""
    ps = [p for p in (welch(a, b)[2] for _, _, a, b in _pair_samples(rows, pairs) if a and b)
          if not np.isnan(p)]
    if not ps:
        return []
    kept = int((stats.false_discovery_control(ps) < 0.05).sum())
    return [f"Multiple comparisons: {sum(p < 0.05 for p in ps)} of the {len(ps)} p-values are below "
            f"0.05; {kept} stay below 0.05 after the Benjamini-Hochberg adjustment "
            f"(`scipy.stats.false_discovery_control`, 5% false discovery rate over this table).", ""]


def describe(label, a, b):
    """One sentence on mean(a) - mean(b): beyond seed noise, or the gaps the seeds rule out."""
    diff, _, p, (low, high) = welch(a, b)
    head = f"{label}: {100 * diff:+.2f} pp (n = {len(a)}/{len(b)}"
    if np.isnan(p):
        return head + "; too few seeds for a verdict)."
    head += f", 95% interval [{100 * low:+.2f}, {100 * high:+.2f}], Welch p = {p:.3f})"
    if p < 0.05:
        return head + ", beyond seed noise."
    bound = 100 * max(abs(low), abs(high))
    return head + f", within seed noise; the interval excludes gaps larger than {bound:.2f} pp either way."


# --- Paired tests and power of the confirmatory experiment (issue 13) -------------------------------------


def paired(a, b):
    """Mean paired difference a - b, its 95% interval and the two-sided paired t-test p-value.

    ``a`` and ``b`` are aligned by seed. Returns (diff, (low, high), p); NaN where n < 2 or no spread.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    nan = float("nan")
    if len(d) < 2 or d.std(ddof=1) == 0:
        return float(d.mean()) if len(d) else nan, (nan, nan), nan
    test = stats.ttest_rel(a, b)
    interval = test.confidence_interval(0.95)
    return float(d.mean()), (float(interval.low), float(interval.high)), float(test.pvalue)


def tost_paired(a, b, margin):
    """Paired two one-sided tests of |mean(a - b)| < margin: the larger of the two one-sided p-values."""
    d = np.asarray(a, float) - np.asarray(b, float)
    low = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    high = stats.ttest_1samp(d, margin, alternative="less").pvalue
    return float(max(low, high))


def holm(pvalues):
    """Holm-adjusted p-values, in the input order."""
    order = np.argsort(pvalues)
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def _z(q):
    from statistics import NormalDist  # pylint: disable=g-import-not-at-top

    return NormalDist().inv_cdf(q)


def seeds_for_difference(sd, effect, alpha, power=0.8):
    """Seeds (pairs) for a two-sided paired t-test to detect ``effect`` with ``power``.

    Normal approximation with Guenther's small-sample correction (standard library only):
    n = ((z_{1-alpha/2} + z_{power}) * sd / effect)^2 + z_{1-alpha/2}^2 / 2, rounded up.

    Example:
        >>> seeds_for_difference(1.0, 1.0, 0.05)
        10
    """
    za = _z(1 - alpha / 2)
    return math.ceil(((za + _z(power)) * sd / effect) ** 2 + za ** 2 / 2)


def seeds_for_equivalence(sd, margin, alpha, power=0.8, true_difference=0.0):
    """Seeds (pairs) for a paired TOST to show |difference| < ``margin`` with ``power``.

    n = ((z_{1-alpha} + z_{1-beta/2}) * sd / margin)^2 when the true difference is 0 (else
    z_{1-beta} and margin - |true difference|), plus Guenther's correction.
    """
    za = _z(1 - alpha)
    zb = _z(1 - (1 - power) / 2) if true_difference == 0 else _z(power)
    return math.ceil(((za + zb) * sd / (margin - abs(true_difference))) ** 2 + za ** 2 / 2)


def detectable_effect(sd, seeds, alpha, power=0.8):
    """Smallest effect a two-sided paired t-test detects with ``power`` at ``seeds`` (inverse of the above)."""
    za = _z(1 - alpha / 2)
    return (za + _z(power)) * sd / max(seeds - za ** 2 / 2, 1e-9) ** 0.5
