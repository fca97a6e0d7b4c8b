"""Train the mask GANs or the pix2pix models on several GPUs or nodes with ``torchrun``.

    torchrun --nproc_per_node=4 -m cellsynth.pipelines.torchrun mask_gan --env paper [--group fold_0 ...]
    torchrun --nproc_per_node=4 -m cellsynth.pipelines.torchrun image_translation --env paper

Every process reads the project's configuration and the training data from the catalog
(run ``kedro run --pipeline=data_prep`` first), trains with gradients averaged over all
processes, and rank 0 writes the checkpoints to the same fingerprinted folders the
pipeline's node uses. Afterwards ``kedro run --pipeline=<pipeline> --env paper`` finds
the finished runs, loads them instead of training, and goes on from there.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from cellsynth import quality
from cellsynth.image_painter import train_painter
from cellsynth.mask_generator import MaskGANSettings, train_mask_gan
from cellsynth.training import Runtime, start_runtime
from cellsynth.translation import Pix2PixConfig


def _train_mask_gan(group: str, data: dict, params: dict[str, Any], runtime: Runtime) -> tuple[Any, Any]:
    fid = params["fid"]
    features = quality.inception_features(fid["inception_weights"], fid["allow_download"], device=runtime.device)
    return train_mask_gan(data["flows"], MaskGANSettings.from_params(params["mask_gan"]), group=group,
                          method=params["encoding"]["method"], features=features, runtime=runtime)


def _train_painter(group: str, data: dict, params: dict[str, Any], runtime: Runtime) -> tuple[Any, Any]:
    settings = params["image_translation"]
    return train_painter(data["labels"], data["images"], Pix2PixConfig.from_params(settings["training"]),
                         group=group, checkpoint_dir=settings["checkpoint_dir"], runtime=runtime)


# pipeline -> (catalog entry it trains on, train one group: (group, that group's data, all params, runtime))
TRAINERS: dict[str, tuple[str, Callable[[str, dict, dict[str, Any], Runtime], tuple[Any, Any]]]] = {
    "mask_gan": ("encoded_flows", _train_mask_gan),
    "image_translation": ("training_crops", _train_painter),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", choices=sorted(TRAINERS), help="whose models to train")
    parser.add_argument("--env", default=None, help="Kedro configuration environment, e.g. paper")
    parser.add_argument("--group", action="append", help="train only these groups (fold_0, ..., all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    dataset, train = TRAINERS[args.pipeline]

    bootstrap_project(Path.cwd())
    with KedroSession.create(project_path=Path.cwd(), env=args.env) as session:
        context = session.load_context()  # also points MLflow at the project's tracking store
        params, data = context.params, context.catalog.load(dataset)
        settings = params[args.pipeline]
        if settings.get("painter", "pix2pix") != "pix2pix":
            raise SystemExit(f"{args.pipeline}.painter is {settings['painter']!r}: nothing to train with torchrun; "
                             f"`kedro run --pipeline={args.pipeline}` builds it")
        runtime = start_runtime(**settings["runtime"], seed=settings["training"]["seed"])
        groups = args.group or sorted(data)
        unknown = sorted(set(groups) - set(data))
        if unknown:
            raise SystemExit(f"unknown group(s) {unknown}; {dataset} holds {sorted(data)}")
        run = mlflow.start_run(run_name=f"{args.pipeline} torchrun x{runtime.world_size}") if runtime.is_main else None
        try:
            for group in groups:
                _, store = train(group, data[group], params, runtime)
                if runtime.is_main:
                    logging.info("%s: checkpoints in %s", group, store.directory)
        finally:
            if run is not None:
                mlflow.end_run()


if __name__ == "__main__":
    main()
