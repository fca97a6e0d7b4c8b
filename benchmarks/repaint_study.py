"""Repaint a finished study's synthetic pairs with other pix2pix settings, or with the collage painter: what
the images alone do to segmentation, without running the mask GAN again.

    cd <the study's project folder>
    python benchmarks/repaint_study.py --env workstation --group fold_0-subset_0.25 --set intensity_codes=true --save
    python benchmarks/repaint_study.py --env workstation --group fold_0-subset_0.25 --painter collage --save
    python benchmarks/retrain_longer.py --env workstation --epochs 60 --experiment subset_0.25_merge ...

Reads the study's crops and GAN masks through its Kedro catalog (so it runs in the study's folder, with its
``--env`` and ``--params``), trains the pix2pix of each ``--group`` with ``image_translation.training``
changed by ``--set`` (content-addressed checkpoints: settings trained before are loaded), scores it on the
group's held-out crops (PSNR, SSIM, FID/KID, spread of nucleus brightness against real) and prints one JSON
line per group. With ``--save`` it paints the group's GAN masks, its ``realmasks`` control and its SIMCEP
masks again, as the pipelines' nodes do, and writes new versions of the group's ``synthetic_pairs``,
``realmask_pairs`` and ``simcep_pairs``; ``retrain_longer.py`` then trains on the newest versions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_session import require_groups, study_context  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="workstation", help="the Kedro environment the study ran with")
    parser.add_argument("--params", default=None, help="the study's --params, if it had any")
    parser.add_argument("--group", action="append", required=True, help="a generative group, e.g. fold_0")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an image_translation.training setting (YAML value)")
    parser.add_argument("--painter", choices=("pix2pix", "collage"), default=None,
                        help="image_translation.painter (default: the study's)")
    parser.add_argument("--save", action="store_true", help="write the repainted pairs as new versions")
    args = parser.parse_args()

    from cellsynth import quality
    from cellsynth.comparison import MaskSet, subsample
    from cellsynth.image_painter import ImagePainter, score_painter
    from cellsynth.pipelines.fanout import group_namespace
    from cellsynth.pipelines.image_translation.nodes import (
        train_group_pix2pix,
        translate_synthetic_masks,
        translate_training_masks,
    )
    from cellsynth.pipelines.simcep_baseline.nodes import translate_simcep_masks
    from cellsynth.training.config import parse_overrides

    with study_context(args.env, args.params) as context:
        catalog, params = context.catalog, dict(context.params["image_translation"])
        params["training"] = {**params["training"], **parse_overrides(args.set)}
        if args.painter:
            params["painter"] = args.painter
            params.setdefault("collage", {})  # studies from before the collage: its defaults
        crops, heldout = catalog.load("training_crops"), catalog.load("heldout_crops")
        require_groups(args.group, crops)
        features = quality.inception_features(context.params["fid"]["inception_weights"],
                                              context.params["fid"]["allow_download"])
        for group in args.group:
            model = train_group_pix2pix(crops, params, group=group)
            shown = subsample(MaskSet(heldout[group]["labels"], heldout[group]["images"]),
                              params["evaluation"]["max_crops"], params["evaluation"]["seed"])
            scores = score_painter(ImagePainter.from_model(model), shown, features,
                                   batch=params["generation"]["batch"], seed=params["generation"]["seed"]).scores
            print(json.dumps({"group": group, "painter": params.get("painter", "pix2pix"), "set": args.set,
                              "checkpoints": model.get("checkpoints"),
                              **{k: round(v, 4) for k, v in scores.items()}}), flush=True)
            if not args.save:
                continue
            namespace = group_namespace(group)
            masks = catalog.load(f"{namespace}.synthetic_masks")
            for name, pairs in (
                ("synthetic_pairs", translate_synthetic_masks(model, masks, params, group=group)),
                ("realmask_pairs", translate_training_masks(model, crops, masks, params, group=group)),
                ("simcep_pairs", translate_simcep_masks(model, catalog.load(f"{namespace}.simcep_masks"), params,
                                                        group=group)),
            ):
                catalog.save(f"{namespace}.{name}", pairs)
            print(f"{group}: synthetic, realmask and simcep pairs repainted, new versions written", flush=True)

if __name__ == "__main__":
    main()
