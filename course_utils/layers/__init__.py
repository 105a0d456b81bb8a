"""Reference normalization layers, written to be read; each matches its PyTorch or timm twin.

One idea per module: a ``torch.nn.Module`` whose docstring gives the formula
and shapes, and a functional form with the same arguments as PyTorch's.
"""
from .batch_norm import BatchNorm2d, batch_norm2d
from .fold import fold_bn_into_conv
from .grn import GlobalResponseNorm, global_response_norm
from .group_norm import GroupNorm, group_norm
from .instance_norm import InstanceNorm2d, instance_norm2d
from .layer_norm import LayerNorm, layer_norm
from .lrn import LocalResponseNorm, local_response_norm
from .rms_norm import RMSNorm, rms_norm

__all__ = [
    "BatchNorm2d", "batch_norm2d",
    "LayerNorm", "layer_norm",
    "RMSNorm", "rms_norm",
    "GroupNorm", "group_norm",
    "InstanceNorm2d", "instance_norm2d",
    "LocalResponseNorm", "local_response_norm",
    "GlobalResponseNorm", "global_response_norm",
    "fold_bn_into_conv",
]
