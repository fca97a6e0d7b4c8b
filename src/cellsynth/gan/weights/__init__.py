"""Generators shipped with cellsynth, as files (see :data:`cellsynth.gan.pretrained.SHIPPED`)."""
