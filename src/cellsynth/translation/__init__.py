"""pix2pix (Isola et al. 2017) in plain PyTorch: instance masks -> microscopy images.

``networks`` holds the U-Net generator and the 70x70 PatchGAN discriminator,
``normalization`` the per-channel intensity scaling of 8- and 16-bit images,
``masks`` the mask representations fed to the generator (``label``, ``flows``,
``boundary``), ``codes`` the region intensity codes a generator may also take
(pix2pixHD's instance-wise features), ``training`` the training loop (on the shared
:mod:`cellsynth.training` machinery) and :func:`translate`.
"""

from cellsynth.translation.masks import (
    REPRESENTATIONS,
    mask_channels,
    masks_to_input,
    permute_labels,
)
from cellsynth.translation.networks import PatchDiscriminator, UNetGenerator
from cellsynth.translation.normalization import ChannelNormalizer
from cellsynth.translation.training import (
    Pix2PixConfig,
    Pix2PixResult,
    build_unet_generator,
    train_pix2pix,
    translate,
)

__all__ = [
    "REPRESENTATIONS",
    "ChannelNormalizer",
    "PatchDiscriminator",
    "Pix2PixConfig",
    "Pix2PixResult",
    "UNetGenerator",
    "build_unet_generator",
    "mask_channels",
    "masks_to_input",
    "permute_labels",
    "train_pix2pix",
    "translate",
]
