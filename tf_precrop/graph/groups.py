"""Channel groups: a weighted union-find over tensor widths.

Every width that the rebuild may change belongs to a group. Two groups are *tied* when their widths must
keep a fixed proportion (an Add ties 1:1; a depthwise conv with ``depth_multiplier=2`` feeding an Add ties its
output 2:1 to its input). Ties are kept as exact fractions, so a group's width is always
``factor * width(root)`` and the solver needs one variable per root.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction


@dataclasses.dataclass
class _Group:
    dense_width: int
    origin: str  # layer path that created the group, for messages and reports
    parent: int
    factor: Fraction  # width(self) = factor * width(parent)


class GroupSet:
    """Weighted union-find of channel groups with pins (groups whose width may not change)."""

    def __init__(self):
        self._groups: list[_Group] = []
        self._pins: dict[int, str] = {}  # root -> reason its width is fixed
        self._steps: dict[int, int] = {}  # root -> its width must be a multiple of this

    def __len__(self):
        return len(self._groups)

    def new(self, dense_width: int, origin: str, pin: str | None = None) -> int:
        gid = len(self._groups)
        self._groups.append(_Group(int(dense_width), origin, gid, Fraction(1)))
        if pin:
            self.pin(gid, pin)
        return gid

    def find(self, gid: int) -> tuple[int, Fraction]:
        """Returns ``(root, factor)`` with ``width(gid) == factor * width(root)``."""
        factor = Fraction(1)
        node = gid
        while self._groups[node].parent != node:
            factor *= self._groups[node].factor
            node = self._groups[node].parent
        # Path compression keeps later look-ups flat.
        if node != gid:
            self._groups[gid].parent, self._groups[gid].factor = node, factor
        return node, factor

    def root(self, gid: int) -> int:
        return self.find(gid)[0]

    def dense_width(self, gid: int) -> int:
        return self._groups[gid].dense_width

    def origin(self, gid: int) -> str:
        return self._groups[gid].origin

    def tie(self, a: int, b: int, ratio: Fraction = Fraction(1), reason: str = "") -> None:
        """Requires ``width(a) == ratio * width(b)`` for every rebuild.

        A contradictory tie (a group tied to itself with another ratio) cannot be kept while widths change,
        so it pins the group instead: the model stays valid, that group just keeps its width.
        """
        ra, fa = self.find(a)
        rb, fb = self.find(b)
        if ra == rb:
            if fa != ratio * fb:
                self.pin(ra, reason or f"contradictory width ties at {self.origin(a)}")
            return
        # width(ra) = (ratio * fb / fa) * width(rb)
        self._groups[ra].parent, self._groups[ra].factor = rb, ratio * fb / fa
        if ra in self._pins:
            self._pins.setdefault(rb, self._pins.pop(ra))
        if ra in self._steps:
            self._require_multiple_of_root(rb, self._steps.pop(ra), ratio * fb / fa)

    def pin(self, gid: int, reason: str) -> None:
        self._pins.setdefault(self.root(gid), reason)

    def pinned(self, gid: int) -> str | None:
        """Returns why the group's width is fixed, or None when it may change."""
        return self._pins.get(self.root(gid))

    def require_multiple(self, gid: int, multiple: int, scale: Fraction = Fraction(1)) -> None:
        """Requires ``scale * width(gid)`` to stay a multiple of ``multiple`` (grouped convolutions)."""
        root, factor = self.find(gid)
        self._require_multiple_of_root(root, multiple, factor * Fraction(scale))

    def _require_multiple_of_root(self, root: int, multiple: int, factor: Fraction) -> None:
        # factor * W ≡ 0 (mod multiple) with W integral  <=>  W multiple of q * multiple / gcd(p, multiple).
        p, q = factor.numerator, factor.denominator
        need = q * multiple // math.gcd(p, multiple)
        current = self._steps.get(root, 1)
        self._steps[root] = current * need // math.gcd(current, need)

    def roots(self) -> list[int]:
        return [g for g in range(len(self._groups)) if self.root(g) == g]

    def step(self, root: int) -> int:
        """The smallest width increment of a root that keeps every member integral and divisible."""
        step = self._steps.get(root, 1)
        for gid in range(len(self._groups)):
            r, factor = self.find(gid)
            if r == root and factor.denominator != 1:
                q = factor.denominator
                step = step * q // math.gcd(step, q)
        return step
