"""Channel layouts: which groups make up the channel axis of a tensor.

Most tensors carry one group. A Concatenate makes a composite, a depthwise conv with a depth multiplier
scales its input layout, and a Flatten repeats the layout once per spatial position. ``mult`` records that
proportion, so ``width = sum(mult * width(group))``.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction


@dataclasses.dataclass(frozen=True)
class Segment:
    group: int
    mult: Fraction = Fraction(1)


Layout = tuple  # tuple[Segment, ...]


def single(group: int) -> Layout:
    return (Segment(group),)


def scaled(layout: Layout, factor) -> Layout:
    return tuple(Segment(s.group, s.mult * Fraction(factor)) for s in layout)


def width(layout: Layout, group_width) -> int:
    """The width of a layout, given ``group_width(gid) -> int``."""
    total = sum(s.mult * group_width(s.group) for s in layout)
    if total.denominator != 1:
        raise AssertionError(f"non-integral width {total} for layout {layout}")
    return int(total)
