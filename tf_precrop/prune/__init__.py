"""Weight-preserving structured pruning of trained models (``tf_precrop.prune``).

``mapping`` maps every weight axis to the channels it holds, ``importance`` scores channels over their
whole group, ``selection`` picks the survivors, ``api`` puts it together.
"""

from tf_precrop.prune.api import GroupImportance, PruneReport, prune
from tf_precrop.prune.distill import Distiller
from tf_precrop.prune.importance import CRITERIA, ChannelGroup, Member

__all__ = ["CRITERIA", "ChannelGroup", "Distiller", "GroupImportance", "Member", "PruneReport", "prune"]
