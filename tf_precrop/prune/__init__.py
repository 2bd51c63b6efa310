"""Weight-preserving structured pruning of trained models (``tf_precrop.prune``).

``mapping`` maps every weight axis to the channels it holds, ``importance`` scores channels over their
whole group, ``selection`` picks the survivors, ``api`` puts it together; ``distill`` (a Distiller model for
fine-tuning) and ``iterative`` (prune, fine-tune, repeat) help recover accuracy.
"""

from tf_precrop.prune.api import GroupImportance, PruneReport, prune
from tf_precrop.prune.distill import Distiller
from tf_precrop.prune.importance import CRITERIA, ChannelGroup, Member
from tf_precrop.prune.iterative import prune_iteratively

__all__ = ["CRITERIA", "ChannelGroup", "Distiller", "GroupImportance", "Member", "PruneReport", "prune",
           "prune_iteratively"]
