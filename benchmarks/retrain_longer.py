"""The control that ``pretrain`` lacks: ``raw`` trained as many steps as pretraining plus fine-tuning.

    python benchmarks/raw_as_long.py --data ../shared/data/dsb2018/fluo --env workstation --epochs 35

Reads the study's plan (``data/05_model_input/training_sets.json`` of a finished run), retrains each
fold's ``raw`` StarDist for ``--epochs`` (conf/workstation: pretrain = 25 + 10 epochs of 20 steps) with the
environment's other settings, scores it on the fold's test images and prints one JSON line per fold. Models
go to ``evaluation.model_dir`` like the study's, named by their digest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def stardist_settings(env: str) -> tuple[dict, str]:
    """conf/base's StarDist settings with the environment's on top, and the model folder."""
    merged: dict = {}
    for folder in ("base", env):
        path = ROOT / "conf" / folder / "parameters_evaluation.yml"
        if path.is_file():
            evaluation = yaml.safe_load(path.read_text())["evaluation"]
            merged.update(evaluation.get("stardist", {}).get("settings", {}))
    base = yaml.safe_load((ROOT / "conf/base/parameters_evaluation.yml").read_text())["evaluation"]
    return merged, base["model_dir"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the annotated folder the study ran on")
    parser.add_argument("--env", default="workstation")
    parser.add_argument("--epochs", type=int, required=True, help="epochs for raw (pretrain's train + finetune)")
    parser.add_argument("--plan", type=Path, default=Path("data/05_model_input/training_sets.json"))
    args = parser.parse_args()

    from cellsynth.io import read_dataset
    from cellsynth.study import Experiment, run_experiment, segmenters

    plan = json.loads(args.plan.read_text())
    settings, model_dir = stardist_settings(args.env)
    real = {sample.name: sample for sample in read_dataset(args.data)}
    stardist = segmenters()["stardist"]
    for entry in plan["experiments"]:
        if entry["name"] != "raw":
            continue
        experiment = Experiment.from_dict(entry)
        record = run_experiment(experiment, stardist, settings, {"train": args.epochs}, {}, plan["augmenter"], 0,
                                real, {}, Path(model_dir) / "stardist")
        print(json.dumps({"fold": experiment.fold, "epochs": args.epochs, "accuracy": record["accuracy"],
                          "validation_accuracy": record["validation_accuracy"]}), flush=True)


if __name__ == "__main__":
    main()
