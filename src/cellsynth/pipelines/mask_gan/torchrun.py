"""Train the mask GANs on several GPUs or nodes with ``torchrun``.

    torchrun --nproc_per_node=4 -m cellsynth.pipelines.mask_gan.torchrun --env paper [--group fold_0 ...]

Every process reads the project's configuration and the ``encoded_flows`` catalog
entry (run ``kedro run --pipeline=data_prep`` first), trains with gradients averaged
over all processes, and rank 0 writes the checkpoints to the same fingerprinted
folders the ``mask_gan`` node uses. Afterwards ``kedro run --pipeline=mask_gan
--env paper`` finds the finished runs, loads them instead of training, and generates.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import mlflow
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from cellsynth.pipelines.mask_gan.nodes import train_group
from cellsynth.training import start_runtime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default=None, help="Kedro configuration environment, e.g. paper")
    parser.add_argument("--group", action="append", help="train only these groups (fold_0, ..., all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    bootstrap_project(Path.cwd())
    with KedroSession.create(project_path=Path.cwd(), env=args.env) as session:
        context = session.load_context()  # also points MLflow at the project's tracking store
        params, encoded_flows = context.params, context.catalog.load("encoded_flows")
        method = params["encoding"]["method"]
        runtime = start_runtime(**params["mask_gan"]["runtime"], seed=params["mask_gan"]["training"]["seed"])
        groups = args.group or sorted(encoded_flows)
        unknown = sorted(set(groups) - set(encoded_flows))
        if unknown:
            raise SystemExit(f"unknown group(s) {unknown}; encoded_flows holds {sorted(encoded_flows)}")
        run = mlflow.start_run(run_name=f"mask_gan torchrun x{runtime.world_size}") if runtime.is_main else None
        try:
            for group in groups:
                _, store = train_group(group, encoded_flows[group]["flows"], params["mask_gan"], method, runtime)
                if runtime.is_main:
                    logging.info("%s: checkpoints in %s", group, store.directory)
        finally:
            if run is not None:
                mlflow.end_run()


if __name__ == "__main__":
    main()
