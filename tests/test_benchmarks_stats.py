"""The statistics behind the accuracy benchmarks' "beyond seed noise" verdicts."""

import math

import numpy as np

import pytest
from scipy import stats as scipy_stats

from benchmarks import stats


def _rows(method, budget, accuracies, round_to=1):
    return [{"method": method, "flops_budget": budget, "round_to": round_to, "test_accuracy": a}
            for a in accuracies]


def test_welch_matches_the_hand_computation():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]
    diff, se, p, (low, high) = stats.welch(a, b)
    # Sample variances 5/3 and 20/3, n = 4 each.
    va, vb = 5 / 3 / 4, 20 / 3 / 4
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 3)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert diff == -2.5
    assert se == pytest.approx(math.sqrt(25 / 12), rel=1e-12)
    assert (low, high) == (pytest.approx(-2.5 - half, rel=1e-9), pytest.approx(-2.5 + half, rel=1e-9))
    assert p == pytest.approx(2 * scipy_stats.t.sf(2.5 / math.sqrt(25 / 12), df), rel=1e-9)


def test_welch_needs_two_values_and_some_spread():
    diff, se, p, interval = stats.welch([0.9], [0.8, 0.7])
    assert diff == pytest.approx(0.15)
    assert all(math.isnan(x) for x in (se, p, *interval))
    diff, se, p, interval = stats.welch([0.9, 0.9], [0.8, 0.8])
    assert (diff, se) == (pytest.approx(0.1), 0.0)
    assert all(math.isnan(x) for x in (p, *interval))


def test_accuracies_select_method_budget_and_round_to():
    rows = (_rows("precrop", 0.5, [0.8, 0.81]) + _rows("precrop", 0.5, [0.7], round_to=8) +
            _rows("precrop", 0.25, [0.6]) + _rows("dense", None, [0.9]))
    assert stats.accuracies(rows, "precrop", 0.5) == [0.8, 0.81]
    assert stats.accuracies(rows, "precrop", 0.5, round_to=8) == [0.7]
    assert stats.accuracies(rows, "dense", None) == [0.9]
    assert stats.accuracies(rows, "synflow", 0.5) == []


def test_comparison_table_rows():
    rows = _rows("precrop", 0.5, [0.80, 0.82, 0.81]) + _rows("dense", None, [0.90, 0.91, 0.89])
    pairs = [("precrop - dense", ("precrop", 0.5, 1), ("dense", None, 1), 0.5),
             ("precrop - synflow", ("precrop", 0.5, 1), ("synflow", 0.5, 1), 0.5)]
    header, rule, measured, missing = stats.comparison_table(rows, pairs)
    assert header.startswith("| comparison | FLOPs budget | n (A/B) | accuracy difference (pp) |")
    assert rule == "|---|---|---|---|---|---|---|---|"
    # Means 81% and 90%, std 1 pp each: SE = sqrt(2/3) pp, df = 4, p = 2 * t.sf(9 / sqrt(2/3), 4).
    half = scipy_stats.t.ppf(0.975, 4) * math.sqrt(2 / 3)
    p = 2 * scipy_stats.t.sf(9 / math.sqrt(2 / 3), 4)
    assert measured == (f"| precrop - dense | 0.5 | 3/3 | -9.00 | 0.82 | "
                        f"[{-9 - half:+.2f}, {-9 + half:+.2f}] | {p:.3f} | yes |")
    assert missing == "| precrop - synflow | 0.5 | 3/0 | not run | | | | |"


def test_multiple_comparisons_line_counts_benjamini_hochberg_survivors():
    rows = (_rows("a", 0.5, [0.80, 0.81, 0.82]) + _rows("b", 0.5, [0.90, 0.91, 0.92]) +
            _rows("c", 0.5, [0.80, 0.83, 0.86]) + _rows("d", 0.5, [0.81, 0.84, 0.79]))
    pairs = [("a - b", ("a", 0.5, 1), ("b", 0.5, 1), 0.5),    # p ~ 1e-4
             ("c - d", ("c", 0.5, 1), ("d", 0.5, 1), 0.5),    # p ~ 0.4
             ("a - e", ("a", 0.5, 1), ("e", 0.5, 1), 0.5)]    # not run: not counted
    ps = [stats.welch(stats.accuracies(rows, x, 0.5), stats.accuracies(rows, y, 0.5))[2]
          for x, y in (("a", "b"), ("c", "d"))]
    assert ps[0] < 0.001 and ps[1] > 0.3
    assert stats.multiple_comparisons_line(rows, pairs) == [
        "Multiple comparisons: 1 of the 2 p-values are below 0.05; 1 stay below 0.05 after the "
        "Benjamini-Hochberg adjustment (`scipy.stats.false_discovery_control`, 5% false discovery "
        "rate over this table).", ""]
    assert stats.multiple_comparisons_line(rows, pairs[2:]) == []


def test_a_lone_borderline_p_value_does_not_survive_the_adjustment():
    a = [0.80, 0.81, 0.82, 0.83]
    rows = (_rows("a", 0.5, a) + _rows("b", 0.5, [x + 0.022 for x in (0.80, 0.815, 0.82, 0.83)]) +
            _rows("c", 0.5, [0.80, 0.83, 0.86]) + _rows("d", 0.5, [0.81, 0.84, 0.79]))
    pairs = [("a - b", ("a", 0.5, 1), ("b", 0.5, 1), 0.5), ("c - d", ("c", 0.5, 1), ("d", 0.5, 1), 0.5)]
    # p = 0.041 and 0.50: BH scales the smaller to 0.041 * 2 / 1 = 0.083.
    assert 0.04 < stats.welch(stats.accuracies(rows, "a", 0.5), stats.accuracies(rows, "b", 0.5))[2] < 0.042
    assert stats.multiple_comparisons_line(rows, pairs)[0].startswith(
        "Multiple comparisons: 1 of the 2 p-values are below 0.05; 0 stay below 0.05 after")


def test_describe_states_the_verdict_or_the_gap_it_rules_out():
    a, b = [0.80, 0.82, 0.81], [0.90, 0.91, 0.89]
    half = scipy_stats.t.ppf(0.975, 4) * math.sqrt(2 / 3)
    p = 2 * scipy_stats.t.sf(9 / math.sqrt(2 / 3), 4)
    assert stats.describe("A - B", a, b) == (
        f"A - B: -9.00 pp (n = 3/3, 95% interval [{-9 - half:+.2f}, {-9 + half:+.2f}], "
        f"Welch p = {p:.3f}), beyond seed noise.")
    close = stats.describe("C - D", [0.80, 0.83, 0.86], [0.81, 0.84, 0.79])
    low, high = stats.welch([0.80, 0.83, 0.86], [0.81, 0.84, 0.79])[3]
    assert close.endswith(f"within seed noise; the interval excludes gaps larger than "
                          f"{100 * max(-low, high):.2f} pp either way.")
    assert stats.describe("E - F", [0.8], [0.7, 0.9]) == "E - F: +0.00 pp (n = 1/2; too few seeds for a verdict)."


def test_holm_reproduces_the_exploratory_precrop_vs_synflow_adjustment():
    # Raw Welch p of PreCrop - SynFlow at 0.5 / 0.25 / 0.1 in the exploratory grid (README).
    adjusted = stats.holm([0.9502951, 0.0325336, 0.0081200])
    assert [round(p, 3) for p in adjusted] == [0.95, 0.065, 0.024]


def test_paired_and_tost_agree_with_their_definitions():
    a, b = [0.81, 0.83, 0.80, 0.84], [0.80, 0.82, 0.81, 0.82]
    diff, (low, high), p = stats.paired(a, b)
    d = np.subtract(a, b)
    assert diff == pytest.approx(d.mean())
    assert p == pytest.approx(scipy_stats.ttest_1samp(d, 0).pvalue)
    assert low < diff < high
    # Differences of about 0.01 with SD 0.013: well inside +-0.05, not inside +-0.001.
    assert stats.tost_paired(a, b, 0.05) < 0.01
    assert stats.tost_paired(a, b, 0.001) > 0.5


def test_power_formulas_invert_each_other():
    assert stats.seeds_for_difference(1.0, 1.0, 0.05) == 10  # (1.96 + 0.84)^2 + 1.96^2 / 2 = 9.77
    n = stats.seeds_for_difference(1.2, 1.0, 0.05 / 8)
    assert stats.detectable_effect(1.2, n, 0.05 / 8) <= 1.0 < stats.detectable_effect(1.2, n - 1, 0.05 / 8)
    assert stats.seeds_for_equivalence(1.0, 1.0, 0.05) == 10  # (1.645 + 1.282)^2 + 1.645^2 / 2 = 9.92
