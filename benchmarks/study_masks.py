"""What masks a finished study trained its segmenters on: objects per field, foreground share, eccentricity,
median area and solidity of each group's real crops and of every synthetic set, one JSON line per group (the
lines that start with ``{``; Kedro logs to the same stream).

    cd <the study's project folder>
    python benchmarks/study_masks.py --env workstation --params "$P" --group fold_0-subset_0.25 ...

For each ``--group`` it reads, through the study's Kedro catalog (so it runs in the study's folder with its
``--env`` and ``--params``), the group's training crops, its held-out crops (``data_prep``'s
``extract_heldout_crops`` must have run) and the newest version of each of its pair sets that exists
(``synthetic_pairs``, ``simcep_pairs``, ``realmask_pairs``). It also draws the group's trained mask GAN
again, as ``generate_group_masks`` does (same seed and filters, or those ``--set`` names), and measures its
masks at each filter: every decoded field (after ``match_scale``'s zoom, when set), those that pass the
object-count and flow checks, and those kept after ``drop_oversized``. A set whose fields hold fewer nuclei
than the real crops, or rounder ones, shows here before any segmenter is trained.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mask_shape_audit import object_statistics  # noqa: E402
from study_session import require_groups, study_context  # noqa: E402

PAIR_SETS = ("synthetic_pairs", "simcep_pairs", "realmask_pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="workstation", help="the Kedro environment the study ran with")
    parser.add_argument("--params", default=None, help="the study's --params, if it had any")
    parser.add_argument("--group", action="append", required=True, help="a generative group, e.g. fold_0")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="draw the GAN with another mask_gan.generation setting (YAML value; decode options "
                             "as decode.<option>), e.g. --set truncation_psi=0.8 --set decode.cellprob_threshold=-1")
    args = parser.parse_args()

    from cellsynth.crops import group_seed
    from cellsynth.mask_generator import GenerationSettings, MaskSource
    from cellsynth.mask_scale import largest_object_areas
    from cellsynth.pipelines.fanout import group_namespace

    with study_context(args.env, args.params) as context:
        catalog, params = context.catalog, context.params
        crops, heldout = catalog.load("training_crops"), catalog.load("heldout_crops")
        require_groups(args.group, crops)
        missing = sorted(set(args.group) - set(heldout))
        if missing:
            raise SystemExit(f"no held-out crops for {missing}: run `kedro run --nodes extract_heldout_crops` "
                             f"with the study's --env and --params first")
        filters = GenerationSettings.from_params(generation_params(params["mask_gan"]["generation"], args.set))
        method = params["encoding"]["method"]
        for group in args.group:
            namespace = group_namespace(group)
            report: dict[str, object] = {"group": group, "set": args.set,
                                         "training_crops": object_statistics(crops[group]["labels"]),
                                         "heldout_crops": object_statistics(heldout[group]["labels"])}
            model = catalog.load(f"{namespace}.mask_gan_model")
            source = MaskSource.from_model(model, method, dataclasses.replace(filters, drop_oversized=False))
            drawn = source.sample(filters.n, seed=group_seed(filters.seed, group))
            oversized = largest_object_areas(drawn.labels) > model["object_area_max"]
            report["gan"] = {"scale_factor": round(drawn.scale_factor, 3),
                             "decoded": object_statistics(drawn.labels),
                             "passing_checks": object_statistics(drawn.labels[drawn.kept]),
                             "kept_without_oversized": object_statistics(drawn.labels[drawn.kept & ~oversized]),
                             "counts": {"decoded": len(drawn.labels), "passing_checks": int(drawn.kept.sum()),
                                        "kept_without_oversized": int((drawn.kept & ~oversized).sum())}}
            for name in PAIR_SETS:
                dataset = f"{namespace}.{name}"
                if catalog.exists(dataset):
                    pairs = catalog.load(dataset)
                    report[name] = object_statistics(np.stack([pair.labels for pair in pairs])) if pairs else {}
            print(json.dumps(report), flush=True)


def generation_params(generation: dict, overrides: list[str]) -> dict:
    """``mask_gan.generation`` with the ``--set`` overrides; ``decode.<option>`` goes into ``decode``."""
    from cellsynth.training.config import parse_overrides

    result = {**generation, "decode": dict(generation.get("decode") or {})}
    for key, value in parse_overrides(overrides).items():
        section, dot, option = key.partition(".")
        if dot and section == "decode":
            result["decode"][option] = value
        elif dot:
            raise SystemExit(f"--set {key}: only decode options take a dotted name")
        else:
            result[key] = value
    return result


if __name__ == "__main__":
    main()
