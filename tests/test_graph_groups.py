"""Weighted union-find of channel groups."""

from fractions import Fraction

from tf_precrop.graph.groups import GroupSet


def test_tie_keeps_ratio_through_chains():
    groups = GroupSet()
    a, b, c = groups.new(32, "a"), groups.new(16, "b"), groups.new(16, "c")
    groups.tie(a, b, Fraction(2))  # width(a) = 2 width(b)
    groups.tie(c, b)
    root_a, fa = groups.find(a)
    root_c, fc = groups.find(c)
    assert root_a == root_c == groups.root(b)
    assert fa * groups.dense_width(root_a) == 32
    assert fc * groups.dense_width(root_c) == 16


def test_contradictory_tie_pins_instead_of_breaking():
    groups = GroupSet()
    a, b = groups.new(16, "a"), groups.new(16, "b")
    groups.tie(a, b)
    assert groups.pinned(a) is None
    groups.tie(a, b, Fraction(2), reason="conflict at x")
    assert groups.pinned(b) == "conflict at x"


def test_pin_survives_union_and_step_merges():
    groups = GroupSet()
    a, b = groups.new(64, "a"), groups.new(32, "b")
    groups.require_multiple(a, 4)
    groups.tie(a, b, Fraction(2))
    root = groups.root(b)
    # width(a) = 2 W must be a multiple of 4  ->  W a multiple of 2.
    assert groups.step(root) == 2
    c = groups.new(32, "c", pin="network input")
    groups.tie(c, b)
    assert groups.pinned(a) == "network input"


def test_fractional_factor_makes_root_step():
    groups = GroupSet()
    a, b = groups.new(16, "a"), groups.new(32, "b")
    groups.tie(b, a, Fraction(2))  # b = 2a
    groups.tie(a, b, Fraction(1, 2))  # consistent
    assert groups.pinned(a) is None
    root = groups.root(a)
    assert groups.step(root) in (1, 2)
    # Every member stays integral at any multiple of the step.
    for gid in (a, b):
        _, factor = groups.find(gid)
        assert (factor * groups.step(root)).denominator == 1
