"""Training machinery shared by the mask GAN and pix2pix: device, precision and
distributed launch (:mod:`.runtime`), atomic checkpoints with resume (:mod:`.checkpoint`)."""

from cellsynth.training.checkpoint import (
    CheckpointStore,
    capture_rng_state,
    restore_rng_state,
    resume_from_latest,
    run_fingerprint,
)
from cellsynth.training.runtime import Runtime, resolve_device, start_runtime

__all__ = ["CheckpointStore", "Runtime", "capture_rng_state", "resolve_device", "restore_rng_state",
           "resume_from_latest", "run_fingerprint", "start_runtime"]
