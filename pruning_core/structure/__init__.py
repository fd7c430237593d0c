"""What can be removed together: the model's channel dependency groups (``groups``, our adapter over
Torch-Pruning), its two-layer units (``units``: the hidden channels between one producer and one consumer) and
the physical removal of channels (``slicing``)."""

from .groups import ChannelGroup, GroupError, Member, ModelGroups, build_groups, find_output_layers
from .slicing import BATCH_NORMS, CONVS, fix_size_attributes, slice_tensors
from .units import (
                    Unit,
                    capture_inputs,
                    channel_matrix,
                    channel_sums,
                    dense_unit_inputs,
                    find_units,
                    fold_into_consumer,
                    hidden_mask,
                    hidden_representation,
                    kept_count,
                    layer_two,
                    require_units,
                    stream_inputs,
)

__all__ = ["BATCH_NORMS", "CONVS", "ChannelGroup", "GroupError", "Member", "ModelGroups", "Unit", "build_groups",
           "capture_inputs", "channel_matrix", "channel_sums", "dense_unit_inputs", "find_output_layers",
           "find_units", "fix_size_attributes", "fold_into_consumer", "hidden_mask", "hidden_representation",
           "kept_count", "layer_two", "require_units", "slice_tensors", "stream_inputs"]
