"""Which channels survive: the most important classes of every group, as many as the plan's widths.

Classes (channels kept or removed together, ``ChannelMap``) are split into *partitions* that must lose
the same fraction: those touching the same groups and, for grouped convs, the same filter block (each
block keeps an equal number of channels, so ``groups`` stays fixed). Each partition keeps its
``ratio * size`` best classes; ties go to the lower index, and kept indices stay in their original order.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from tf_precrop.prune.mapping import ChannelMap


def group_widths(cmap: ChannelMap, plan) -> callable:
    """``gid -> new width`` from a plan's group (root) widths."""
    root_width = {g.id: g.width for g in plan.groups}
    groups = cmap.graph.groups

    def width(gid):
        root, factor = groups.find(gid)
        return factor * root_width[root]

    return width


def select(cmap: ChannelMap, plan, scores: np.ndarray) -> np.ndarray:
    """Boolean mask over classes: True for the channels that survive.

    Raises:
        ValueError: if the kept channels cannot give every group its planned width (e.g. a class that
            joins groups with different ratios).
    """
    groups = cmap.graph.groups
    new_width = group_widths(cmap, plan)
    ratio = {}  # root -> kept fraction
    partitions: dict = {}
    signature = _signatures(cmap)
    for cls, key in enumerate(signature):
        partitions.setdefault(key, []).append(cls)
    keep = np.zeros(cmap.num_classes, dtype=bool)
    for (gids, _), members in partitions.items():
        root = groups.root(min(gids))
        if root not in ratio:
            ratio[root] = Fraction(new_width(root)) / groups.dense_width(root)
        members = np.asarray(members)
        count = int(np.floor(len(members) * ratio[root] + Fraction(1, 2)))
        order = np.lexsort((members, -scores[members]))  # best first, lower index first among equals
        keep[members[order[:count]]] = True
    _check_widths(cmap, keep, new_width)
    return keep


def _signatures(cmap: ChannelMap) -> list:
    """Per class: (groups it touches, grouped-conv blocks it lies in)."""
    gids = [set() for _ in range(cmap.num_classes)]
    tags = [set() for _ in range(cmap.num_classes)]
    for elem, cls in enumerate(cmap.class_of.tolist()):
        gids[cls].add(int(cmap.group_of[elem]))
        tags[cls].update(cmap.tags.get(elem, ()))
    return [(frozenset(g), frozenset(t)) for g, t in zip(gids, tags)]


def _check_widths(cmap: ChannelMap, keep: np.ndarray, new_width) -> None:
    kept_elements = keep[cmap.class_of]
    for gid in range(len(cmap.base) - 1):
        kept = int(kept_elements[cmap.base[gid]:cmap.base[gid + 1]].sum())
        if kept != new_width(gid):
            raise ValueError(
                f"Cannot keep channels consistently for group {gid} (from '{cmap.graph.groups.origin(gid)}'): "
                f"{kept} channels survive but the plan gives it width {new_width(gid)}. Its channels are tied "
                "to groups with other width ratios; pass that layer in ignored_layers to keep its width."
            )


def class_roots(cmap: ChannelMap) -> np.ndarray:
    """Group root of every class (of its first channel)."""
    groups = cmap.graph.groups
    _, first = np.unique(cmap.class_of, return_index=True)
    return np.array([groups.root(int(cmap.group_of[e])) for e in first], dtype=np.int64)


def kept_positions(cmap: ChannelMap, keep: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mask over an axis's positions: which survive."""
    return keep[cmap.class_of[ids]]
