"""Retrain some of a finished study's experiments for longer: the control that tells a gain or loss of
synthetic pairs from a training budget too short to converge.

    cd <the study's project folder>
    python benchmarks/retrain_longer.py --env workstation --epochs 35                      # raw as long as pretrain
    python benchmarks/retrain_longer.py --env workstation --epochs 60 \\
        --experiment subset_0.25_raw --experiment subset_0.25_merge --experiment subset_0.25_merge_realmasks
    python benchmarks/retrain_longer.py --env workstation --epochs 60 --repeat 1 \\
        --experiment subset_0.25_raw --experiment subset_0.25_merge                # a second seed of each model

Reads the study's plan (``training_sets``), its images and synthetic pairs and its parameters through the
project's Kedro catalog, so it runs in the folder (and with the ``--env``) of the study it extends. Each chosen
experiment of each fold is trained with every training stage's budget set to ``--epochs`` (fine-tuning
stages keep theirs) and the environment's other settings (``--set`` changes some), scored on the fold's test
images, and printed as one JSON line. Models go to ``evaluation.model_dir`` like the study's, named by their
digest: a rerun only trains what is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_session import study_context  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="workstation", help="the Kedro environment the study ran with")
    parser.add_argument("--params", default=None, help="the study's --params, if it had any")
    parser.add_argument("--epochs", type=int, required=True, help="epochs of every train and subset stage")
    parser.add_argument("--experiment", action="append", help="experiment names to retrain (default: raw)")
    parser.add_argument("--fold", type=int, action="append", help="folds to retrain (default: every fold)")
    parser.add_argument("--model", default="stardist", choices=("stardist", "cellpose"))
    parser.add_argument("--repeat", type=int, default=0,
                        help="repeat index: trains with seed + repeat, to measure run-to-run spread (default 0)")
    parser.add_argument("--synthetic-share", type=float, default=None,
                        help="share of the draws that are synthetic in mixed stages (default: the study's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the model's evaluation.<model>.settings (YAML value), "
                             "e.g. --set patch_size=[64,64]")
    args = parser.parse_args()
    if args.epochs < 1:
        raise SystemExit(f"--epochs must be >= 1, got {args.epochs}")
    if args.repeat < 0:
        raise SystemExit(f"--repeat must be >= 0, got {args.repeat}")

    from cellsynth.pipelines.fanout import source_dataset
    from cellsynth.study import Experiment, run_experiment, segmenters
    from cellsynth.training.config import parse_overrides

    with study_context(args.env, args.params) as context:
        catalog, evaluation = context.catalog, context.params["evaluation"]
        plan = catalog.load("training_sets")
        real = {sample.name: sample for sample in catalog.load("annotated_images")}
        names = args.experiment or ["raw"]
        chosen = [Experiment.from_dict(e) for e in plan["experiments"]
                  if e["name"] in names and (args.fold is None or e["fold"] in args.fold)]
        missing = sorted(set(names) - {e.name for e in chosen})
        if missing:
            raise SystemExit(f"the study's plan has no experiment {missing}; it has "
                             f"{sorted({e['name'] for e in plan['experiments']})}")
        synthetic = {source: catalog.load(source_dataset(source)) for e in chosen for source in e.synthetic_groups}
    share = plan.get("synthetic_share") if args.synthetic_share is None else args.synthetic_share
    method = dict(evaluation[args.model])
    method["settings"] = {**method["settings"], **parse_overrides(args.set)}
    epochs = {**method["epochs"], "train": args.epochs, "subset": args.epochs}
    for experiment in sorted(chosen, key=lambda e: (names.index(e.name), e.fold)):
        record = run_experiment(experiment, segmenters()[args.model], settings=method["settings"], epochs=epochs,
                                budget_settings=method.get("budget_settings") or {}, augmenter=plan["augmenter"],
                                repeat=args.repeat, real=real, synthetic=synthetic,
                                folder=Path(evaluation["model_dir"]) / args.model,
                                synthetic_share=share)
        print(json.dumps({"model": args.model, "experiment": experiment.name, "fold": experiment.fold,
                          "repeat": args.repeat, "epochs": args.epochs, "set": args.set, "accuracy": record["accuracy"],
                          "accuracy_by_iou": record["accuracy_by_iou"],
                          "validation_accuracy": record["validation_accuracy"],
                          "synthetic_pairs": record.get("synthetic_pairs"), "synthetic_share": share}), flush=True)


if __name__ == "__main__":
    main()
