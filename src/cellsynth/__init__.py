"""cellsynth: structure-preserving generation of labelled training data for single-cell segmentation."""
