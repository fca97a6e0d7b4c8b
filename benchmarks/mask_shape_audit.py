"""Where a mask generator's nuclei change shape or get lost: prints one JSON line.

    python benchmarks/mask_shape_audit.py --data ../shared/data/dsb2018/he --generator nuclei
        [--generator run/snapshots/G_ema-00080000img.pt --architecture-from run/checkpoints-...] [--psi 0.8]

For the held-out crops of ``--data`` (split as ``converge_gan.py`` splits it), real training crops sent through
the GAN's round trip (encode, shrink by ``mask_gan.downsample``, enlarge, decode) and each ``--generator``'s
fields, it measures the objects at three steps: the connected components of the probability channel
(what the generator drew), the objects Cellpose's dynamics decode without the flow check, and the objects it
keeps with it (``flow_threshold``), then the filter's verdict (too few objects; the decode disagreeing
with the field). Per step: objects per field, mean eccentricity, median area (px²) and mean solidity. If
the real crops keep their shapes through the round trip and a generator's components are already off, the
generator is the cause, not the downsampling, the decoder or the filter.

With ``--augmentations``, also the filter's verdict on real fields (at the GAN's size) after each of ADA's
transforms alone at p = 1, as the discriminator sees them: a transform that makes real fields fail the
filter teaches the discriminator to accept inconsistent flows as real.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from skimage.measure import label as connected_components
from skimage.measure import regionprops

from cellsynth import encoding, flow_dynamics, generated_fields
from cellsynth.gan.augment import AugmentPipe
from cellsynth.gan.pretrained import SHIPPED, load_initial_weights
from cellsynth.gan.training import build_generator, generate_images

sys.path.insert(0, str(Path(__file__).resolve().parent))
from converge_gan import ROOT, filter_settings, load_samples, split_crops  # noqa: E402


def object_statistics(masks: np.ndarray) -> dict[str, float]:
    """Objects per ``(N, H, W)`` label field, the share of its pixels they cover (``foreground``: density
    that does not depend on the nuclei's size) and their mean eccentricity, median area and mean solidity."""
    props = [region for mask in masks for region in regionprops(mask)]
    if not props:
        return {"objects_per_field": 0.0, "foreground": 0.0}
    return {"objects_per_field": round(len(props) / len(masks), 3),
            "foreground": round(float((np.asarray(masks) > 0).mean()), 3),
            "eccentricity": round(float(np.mean([r.eccentricity for r in props])), 3),
            "area_median": float(np.median([r.area for r in props])),
            "solidity": round(float(np.mean([r.solidity for r in props])), 3)}


def audit(fields: np.ndarray, settings: dict) -> dict[str, object]:
    """The three steps and the filter's verdict for ``(N, H, W, 3)`` uint8 full-size flow fields."""
    decode = {k: v for k, v in settings.items() if k not in ("min_objects", "max_consistency_error")}
    threshold = decode.get("cellprob_threshold", 0.0)
    components = np.stack([connected_components(on) for on in flow_dynamics.foreground(fields, threshold).numpy()])
    unchecked = encoding.decode_batch(fields, **{**decode, "flow_threshold": None})
    labels = encoding.decode_batch(fields, **decode)
    errors = generated_fields.consistency_errors(fields, labels, cellprob_threshold=threshold)
    kept = generated_fields.mask_filter(fields, labels, min_objects=settings["min_objects"],
                                        max_consistency_error=settings["max_consistency_error"], errors=errors)
    few = labels.reshape(len(labels), -1).max(axis=1) < settings["min_objects"]
    inconsistent = errors > settings["max_consistency_error"]  # the filter's two reasons, for the report
    return {"components": object_statistics(components), "decoded_without_flow_check": object_statistics(unchecked),
            "decoded": object_statistics(labels), "kept": object_statistics(labels[kept]),
            "pass_rate": round(float(kept.mean()), 3), "too_few_objects": round(float(few.mean()), 3),
            "inconsistent": round(float(inconsistent.mean()), 3)}


def augmentation_audit(small: np.ndarray, downsample: int, settings: dict, seed: int) -> dict[str, dict]:
    """The filter's verdict on ``(N, h, w, 3)`` uint8 GAN-size real fields after each geometric transform of
    ADA's pipeline alone, at p = 1 (``vector_channels`` as the mask GAN sets them)."""
    images = torch.from_numpy(small).permute(0, 3, 1, 2).float() / 127.5 - 1
    verdicts = {}
    for transform in ("none", "xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"):
        torch.manual_seed(seed)
        pipe = AugmentPipe(p=1.0, vector_channels=(1, 2), **({} if transform == "none" else {transform: 1.0}))
        with torch.no_grad():
            augmented = ((pipe(images).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        verdict = audit(encoding.upscale_fields(augmented, downsample), settings)
        verdicts[transform] = {key: verdict[key] for key in ("pass_rate", "too_few_objects", "inconsistent")}
    return verdicts


def load_generator(spec: str, architecture_from: str | None) -> torch.nn.Module:
    """A shipped generator's or an exported file's ``G_ema``; or a bare ``G_ema`` snapshot, with the
    architecture of a checkpoint folder's newest checkpoint."""
    if spec in SHIPPED or architecture_from is None:
        state = load_initial_weights(spec)
        generator = build_generator(state["architecture"])
        generator.load_state_dict(state["G_ema"])
        return generator
    generator = build_generator(load_initial_weights(architecture_from)["architecture"])
    generator.load_state_dict(torch.load(spec, map_location="cpu"))
    return generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="annotated folder (images/, masks/)")
    parser.add_argument("--generator", action="append", default=[], help="shipped name, weights file or snapshot")
    parser.add_argument("--architecture-from", default=None, help="checkpoint folder, for bare G_ema snapshots")
    parser.add_argument("--psi", type=float, default=1.0, help="truncation of the generated fields")
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--n", type=int, default=256, help="fields per source")
    parser.add_argument("--config", default=str(ROOT / "conf/base/parameters_mask_gan.yml"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augmentations", action="store_true", help="also audit ADA's transforms on real fields")
    args = parser.parse_args()
    settings = filter_settings(args.config)
    downsample = yaml.safe_load(Path(args.config).read_text())["mask_gan"]["downsample"]
    train, heldout = split_crops(load_samples(args.data, 0, 0), args.res, 0.25, args.seed, args.data, [1.0])
    sample = train[np.random.default_rng(args.seed).choice(len(train), min(args.n, len(train)), replace=False)]
    small = encoding.downscale(encoding.encode_batch(sample), downsample)
    report: dict[str, object] = {"data": args.data, "downsample": downsample, "psi": args.psi,
                                 "heldout": object_statistics(heldout),
                                 "real_round_trip": audit(encoding.upscale_fields(small, downsample), settings)}
    if args.augmentations:
        report["augmented_real"] = augmentation_audit(small, downsample, settings, args.seed)
    for spec in args.generator:
        generator = load_generator(spec, args.architecture_from)
        generated = generate_images(generator, args.n, seed=args.seed + 1, truncation_psi=args.psi)
        report[spec] = audit(encoding.upscale_fields(generated, downsample), settings)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
