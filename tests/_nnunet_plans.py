"""The tiny 2D PlainConvUNet that the nnU-Net tests build, as nnU-Net's plans describe it.

Shared by the nnU-Net test modules.
"""

from __future__ import annotations

from typing import Any

STRIDES = [[1, 1], [2, 2], [2, 2], [2, 2]]
NETWORK_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def tiny_unet_arch_kwargs() -> dict[str, Any]:
    """``arch_kwargs`` of a 4-stage 2D PlainConvUNet with 4-8-8-8 features (a fresh dict per call)."""
    return {
        "n_stages": 4,
        "features_per_stage": [4, 8, 8, 8],
        "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3]] * 4,
        "strides": [list(s) for s in STRIDES],
        "n_conv_per_stage": [1, 1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
