"""Importance criteria: small callables that score what a model could lose, low scores removed first.

A criterion is called on a ``Workbench`` and returns a dict of score tensors; ``target`` says what the scores
are per: ``"weights"`` (weight name -> a tensor of the weight's shape), ``"channels"`` (channel group -> (channels,)),
``"units"`` (two-layer unit's group -> (hidden channels,)) or ``"rows"`` (layer -> (output rows,)). A method
combines a criterion with a selection rule (``methods.base.RankedUnstructured`` / ``RankedChannels``,
``methods.units.UnitChannels``), as Torch-Pruning's pruners take ``importance=``. Each criterion also has a plain
function (``group_channel_norms``, ``group_bn_scale``, ...) for callers that want the numbers directly.
"""

from .activation import ActivationSum, unit_activation_sums
from .base import Importance
from .bn_scale import BNScale, group_bn_scale
from .magnitude import GroupNorm, RowNorm, WeightMagnitude, group_channel_norms, output_row_norms, weight_magnitude
from .random import RandomScores, random_channel_scores, random_weight_scores

__all__ = ["ActivationSum", "BNScale", "GroupNorm", "Importance", "RandomScores", "RowNorm", "WeightMagnitude",
           "group_bn_scale", "group_channel_norms", "output_row_norms", "random_channel_scores",
           "random_weight_scores", "unit_activation_sums", "weight_magnitude"]
