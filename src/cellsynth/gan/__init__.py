"""StyleGAN2-ADA in plain PyTorch (Karras et al. 2020a, 2020b), learning Cellpose flow fields.

``layers`` holds the equalised-lr, FIR and modulated-convolution primitives, ``networks`` the
skip generator and residual discriminator, ``augment`` the ADA pipeline and its p controller,
``loss`` the logistic (or relativistic) loss with lazy R1 and path-length regularisation, the
discriminator's input blur and mode seeking, ``training`` the loop and generation, and
``pretrained`` the generators shipped with cellsynth and the starting weights of transfer learning.
"""

from cellsynth.gan.augment import AdaptiveAugmentController, AugmentPipe
from cellsynth.gan.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    ModulatedConv2d,
    set_modulation,
)
from cellsynth.gan.loss import (
    DiscriminatorMainLoss,
    StyleGAN2Loss,
    auto_r1_gamma,
    ema_beta,
)
from cellsynth.gan.networks import (
    Discriminator,
    Generator,
    MappingNetwork,
    SynthesisNetwork,
)

__all__ = [
    "AdaptiveAugmentController",
    "AugmentPipe",
    "Discriminator",
    "DiscriminatorMainLoss",
    "EqualizedConv2d",
    "EqualizedLinear",
    "Generator",
    "MappingNetwork",
    "ModulatedConv2d",
    "set_modulation",
    "StyleGAN2Loss",
    "SynthesisNetwork",
    "auto_r1_gamma",
    "ema_beta",
]
