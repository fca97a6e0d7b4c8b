"""The mask GAN's learning curve on an annotated folder (or the demo tissue); prints one JSON line.

    python benchmarks/converge_gan.py --data ../shared/data/dsb2018/fluo --res 64 [--minutes 90 | --kimg K]
        [--downsample 2] [--set r1_gamma=1 --set learning_rate=0.002 ...] [--out DIR] [--work DIR]

The images are split into training and held-out images (with several ``--data`` folders, each
folder is split on its own and the smaller folders' training crops are repeated up to the largest's
count, so that every folder weighs alike); the training images give crops of
``--res`` pixels (with their rotations, at least 3 objects each, as data_prep makes them), the
held-out images unrotated crops. The GAN is trained with the settings of
``conf/base/parameters_mask_gan.yml`` (``mask_gan.training``, changed by ``--set``), on fields of
the crops shrunk by ``--downsample``; its fields are enlarged again before decoding. At every
snapshot the fields of ``G_ema`` are measured against the held-out crops: FID (flow fields),
sample diversity (a collapse shows here), the share of masks passing the filters of
``mask_gan.generation``, cells per crop, the share of fields per density bin (objects per decoded
field, before the filter) and the layout distances of :mod:`cellsynth.layout`.
SIMCEP fitted to the training crops and the training crops themselves are measured the same way
once, as the lines the curve is read against. ``--out`` gets the curve (PNG), a sample grid of
the best snapshot (PNG) and the JSON; ``--work`` keeps the checkpoints (a rerun resumes) and
every snapshot's ``G_ema``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from cellsynth import crops, encoding, generated_fields, io, layout, phantom, quality, simcep
from cellsynth.figures import panel_grid
from cellsynth.gan.pretrained import export_weights, load_initial_weights
from cellsynth.gan.training import (
    GANConfig,
    build_generator,
    gan_run_fingerprint,
    generate_images,
    snapshot_rank,
    train_gan,
)
from cellsynth.training import CheckpointStore, start_runtime
from cellsynth.training.config import parse_overrides

ROOT = Path(__file__).resolve().parents[1]
LAYOUT_KEYS = layout.SCALAR_STATISTICS[1:] + ("ripley_l",)  # cells_per_crop is reported on its own
DENSITY_BINS = ((0, 2), (3, 5), (6, 9), (10, None))  # objects per field: sparse fields fail min_objects


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=None,
                        help="annotated folder (images/, masks/) or 'demo'; repeat for several folders")
    parser.add_argument("--res", type=int, default=64, help="crop size in pixels")
    parser.add_argument("--downsample", type=int, default=None,
                        help="the GAN learns fields this many times smaller (default: mask_gan.downsample)")
    parser.add_argument("--minutes", type=float, default=90.0, help="training time budget")
    parser.add_argument("--kimg", type=float, default=None, help="train this long instead of --minutes")
    parser.add_argument("--snapshot-kimg", type=float, default=10.0)
    parser.add_argument("--heldout", type=float, default=0.25, help="share of the images held out")
    parser.add_argument("--scale", type=float, action="append", default=None,
                        help="also train on the training images rescaled by this factor (repeatable; held-out "
                             "crops stay at 1): a generator for other magnifications and densities")
    parser.add_argument("--n-eval", type=int, default=128, help="fields generated per snapshot")
    parser.add_argument("--truncation-psi", type=float, default=None,
                        help="truncation of the measured fields (default: mask_gan.generation.truncation_psi)")
    parser.add_argument("--cellprob-threshold", type=float, default=None,
                        help="decode the measured fields at this probability logit (default: "
                             "mask_gan.generation.decode's, 0 if unset); below 0 grows the objects of soft maps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a mask_gan.training setting (YAML value)")
    parser.add_argument("--config", default=str(ROOT / "conf/base/parameters_mask_gan.yml"))
    parser.add_argument("--demo-images", type=int, default=12, help="phantom images with --data demo")
    parser.add_argument("--demo-seed", type=int, default=1000, help="phantom seed with --data demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--init-from", default=None, help="start from these weights (mask_gan.init_from)")
    parser.add_argument("--export", default=None, metavar="FILE",
                        help="write the last checkpoint's networks here, to start other runs from (init_from)")
    parser.add_argument("--rescore", action="store_true",
                        help="measure the snapshots kept in --work again (e.g. after a change of the filters), "
                             "no training")
    parser.add_argument("--out", default=None, help="folder for the curve, the grid and the JSON")
    parser.add_argument("--work", default=None, help="folder for checkpoints and snapshots (default: temporary)")
    return parser.parse_args()


def load_samples(data: str, n_demo: int, demo_seed: int) -> list[io.AnnotatedImage]:
    if data == "demo":
        return [io.AnnotatedImage(f"phantom_{i:03d}", image, labels)
                for i, (image, labels) in enumerate(phantom.demo_dataset(n_demo, 256, seed=demo_seed))]
    return io.read_dataset(data)


def training_config(path: str, overrides: list[str], kimg: float, snapshot_kimg: float, seed: int) -> GANConfig:
    params = yaml.safe_load(Path(path).read_text())["mask_gan"]["training"]
    params.update(parse_overrides(overrides))
    params.update(kimg=kimg, snapshot_kimg=snapshot_kimg, seed=seed)
    return GANConfig.from_params(params)


def filter_settings(path: str) -> dict:
    generation = yaml.safe_load(Path(path).read_text())["mask_gan"]["generation"]
    return {"min_objects": generation["min_objects"], "max_consistency_error": generation["max_consistency_error"],
            **generation.get("decode", {})}


def measure(fields: np.ndarray, reference: quality.ImageFeatures, features: quality.InceptionFeatures,
            reference_layout: dict, settings: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """The snapshot metrics of a set of full-size fields, plus layout distances of its kept masks."""
    metrics, labels, kept = generated_fields.generated_field_metrics(fields, reference, features, **settings)
    metrics.update(density_shares(labels))
    if kept.any():
        distances = layout.compare_layouts(reference_layout, list(labels[kept]))
        metrics.update({f"layout.{k}": distances[k] for k in LAYOUT_KEYS})
        metrics["layout.cells_per_crop"] = distances["cells_per_crop"]
    return metrics, labels, kept


def density_shares(labels: np.ndarray) -> dict[str, float]:
    """The share of ``(N, H, W)`` label fields per bin of :data:`DENSITY_BINS` objects."""
    objects = labels.reshape(len(labels), -1).max(axis=1)
    shares = {}
    for low, high in DENSITY_BINS:
        inside = (objects >= low) & (objects <= (high if high is not None else np.inf))
        shares[f"density.{low}-{high}" if high is not None else f"density.{low}+"] = float(inside.mean())
    return shares


def targets(record: dict, baselines: dict) -> dict[str, bool]:
    """The mask GAN's four targets at one snapshot: pass rate >= 0.7, diversity >= 0.7x real, cells per
    kept crop within 25 % of real, and closer to the held-out crops than SIMCEP on >= 3 of the 5 layout
    distances."""
    real, sim = baselines["real"], baselines["simcep"]

    def value(source: dict, key: str) -> float:
        number = source.get(key)
        return math.nan if number is None else float(number)

    closer = sum(value(record, f"layout.{k}") < value(sim, f"layout.{k}") for k in LAYOUT_KEYS)
    return {"pass_rate": value(record, "pass_rate") >= 0.7,
            "diversity": value(record, "diversity") >= 0.7 * value(real, "diversity"),
            "cells_per_crop": abs(value(record, "cells_per_crop") / value(real, "cells_per_crop") - 1) <= 0.25,
            "layout_closer_than_simcep": closer >= 3}


def split_crops(samples: list[io.AnnotatedImage], res: int, heldout: float, seed: int, name: str,
                scales: list[float]):
    """Training crops (with rotations, of the training images at every scale) and held-out crops
    (unrotated, at scale 1) of one folder's images."""
    order = np.random.default_rng(seed).permutation(len(samples))
    n_heldout = max(1, round(heldout * len(samples)))
    if len(samples) - n_heldout < 1:
        raise SystemExit(f"{name}: {len(samples)} image(s) cannot be split into training and held-out images")
    heldout_images = [samples[i] for i in order[:n_heldout]]
    training_images = [sample if factor == 1 else crops.rescale_sample(sample, factor)
                       for factor in scales for sample in (samples[i] for i in order[n_heldout:])]
    train_crops = crops.crops_from_images(training_images, size=res, stride=res, rotations=True)["labels"]
    heldout_crops = crops.crops_from_images(heldout_images, size=res, stride=res, rotations=False)["labels"]
    print(f"{name}: {len(training_images)} training images (scales {scales}) -> {len(train_crops)} crops "
          "(with rotations); "
          f"{len(heldout_images)} held-out images -> {len(heldout_crops)} crops", file=sys.stderr)
    return train_crops, heldout_crops


def main() -> None:
    args = parse_args()
    configured = yaml.safe_load(Path(args.config).read_text())["mask_gan"]
    if args.downsample is None:
        args.downsample = configured["downsample"]
    if args.truncation_psi is None:
        args.truncation_psi = configured["generation"]["truncation_psi"]
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    folders = args.data or ["demo"]
    split = [split_crops(load_samples(folder, args.demo_images, args.demo_seed), args.res, args.heldout, args.seed,
                         folder, args.scale or [1.0]) for folder in folders]
    largest = max(len(train) for train, _ in split)
    # every folder weighs alike: the smaller folders' training crops are repeated (whole copies first)
    train_crops = np.concatenate([np.resize(train, (largest, *train.shape[1:])) for train, _ in split])
    heldout_crops = np.concatenate([held for _, held in split])
    gan_fields = encoding.downscale(encoding.encode_batch(train_crops, progress=True), args.downsample)
    print(f"{len(train_crops)} training crops in all; GAN at {gan_fields.shape[1]}x{gan_fields.shape[2]}",
          file=sys.stderr)

    runtime = start_runtime(args.device, "auto", seed=args.seed)
    features = quality.inception_features(device=runtime.device)
    heldout_fields = encoding.encode_batch(heldout_crops)
    reference = quality.extract_features(heldout_fields, features, name="held-out fields")
    reference_layout = layout.layout_statistics(list(heldout_crops))
    settings = filter_settings(args.config)
    if args.cellprob_threshold is not None:
        settings["cellprob_threshold"] = args.cellprob_threshold
    rng = np.random.default_rng(args.seed)

    baselines = {}
    real_sample = encoding.encode_batch(train_crops[rng.choice(len(train_crops), min(args.n_eval, len(train_crops)),
                                                               replace=False)])
    baselines["real"], real_labels, _ = measure(real_sample, reference, features, reference_layout, settings)
    # held-out crops, unrotated like GAN output
    baselines["real"]["diversity"] = generated_fields.sample_diversity(heldout_fields)
    baselines["real"]["cells_per_crop"] = float(heldout_crops.reshape(len(heldout_crops), -1).max(1).mean())
    baselines["real"].update(density_shares(heldout_crops))
    fit_sample = train_crops[: len(train_crops) // 4] if len(train_crops) >= 8 else train_crops  # unrotated crops
    model = simcep.fit(list(fit_sample))
    simcep_fields = encoding.encode_batch(np.stack(simcep.simulate(model, args.n_eval, args.res, seed=args.seed)))
    baselines["simcep"], simcep_labels, _ = measure(simcep_fields, reference, features, reference_layout, settings)
    print(f"baselines: {json.dumps(baselines)}", file=sys.stderr)

    config = training_config(args.config, args.set, args.kimg or 1e6, args.snapshot_kimg, args.seed)
    init_from = load_initial_weights(args.init_from) if args.init_from else None
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="converge_gan-"))
    store = CheckpointStore(work / f"checkpoints-{gan_run_fingerprint(config, gan_fields, init_from)}")
    if args.rescore:  # the run being rescored may predate a change of settings: take the newest checkpoints
        checkpoint_folders = sorted(work.glob("checkpoints-*"), key=lambda folder: folder.stat().st_mtime)
        if not checkpoint_folders:
            raise SystemExit(f"--rescore: no checkpoints in {work}")
        store = CheckpointStore(checkpoint_folders[-1])
    snapshots = work / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    resumed = store.latest()
    start_kimg = resumed["nimg"] / 1000 if resumed else 0.0
    train_start = time.perf_counter()

    def evaluate(generator) -> dict[str, float]:
        small = generate_images(generator, args.n_eval, seed=123, truncation_psi=args.truncation_psi,
                                device=runtime.device)
        metrics, _, _ = measure(encoding.upscale_fields(small, args.downsample), reference, features,
                                reference_layout, settings)
        return metrics

    seconds: dict[float, float] = {}  # training seconds (evaluation included) at each snapshot of this call

    def log(metrics: dict[str, float], step: int) -> None:
        seconds[step / 1000] = round(time.perf_counter() - train_start, 1)
        record = {"kimg": step / 1000, "train_s": seconds[step / 1000], **metrics}
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}), file=sys.stderr)

    # Train in snapshot-long pieces (each resumes from the last checkpoint) until the budget is spent.
    timing_path = work / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {"train_s": 0.0}
    deadline = train_start + args.minutes * 60
    target = args.snapshot_kimg
    while not args.rescore:
        config.kimg = target
        train_gan(gan_fields, config, store, runtime, evaluate=evaluate, log_metrics=log, init_from=init_from,
                  progress=False)
        state = store.latest()
        torch.save(state["G_ema"], snapshots / f"G_ema-{state['nimg']:08d}img.pt")
        reached = state["nimg"] / 1000
        timing_path.write_text(json.dumps({"train_s": timing["train_s"] + time.perf_counter() - train_start}))
        if args.kimg is not None and reached >= args.kimg:
            break
        if args.kimg is None and time.perf_counter() >= deadline:
            break
        target = (math.floor(reached / args.snapshot_kimg + 1e-9) + 1) * args.snapshot_kimg  # the next snapshot
        target = target if args.kimg is None else min(target, args.kimg)
    state = store.latest()
    history = state["history"]
    if args.rescore:
        history = rescore(history, snapshots, state["architecture"], evaluate)
        config = GANConfig.from_params(state["config"])
        start_kimg = 0.0
    best = min(history, key=snapshot_rank)
    trained_kimg = state["nimg"] / 1000
    if timing_path.is_file():  # training time of this call, or of the whole run when rescoring
        train_seconds = json.loads(timing_path.read_text())["train_s"] - (0 if args.rescore else timing["train_s"])
        sec_per_kimg = round(train_seconds / max(trained_kimg - start_kimg, 1e-9), 2)  # evaluation included
    else:
        sec_per_kimg = None

    def pick(metric: str, record: dict) -> float | None:
        value = record.get(metric)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, 4)

    fid_key = next(k for k in best if k.startswith("fid"))
    report = {
        "data": folders if len(folders) > 1 else folders[0], "init_from": args.init_from,
        "resolution": args.res, "downsample": args.downsample, "scales": args.scale or [1.0],
        "truncation_psi": args.truncation_psi, "cellprob_threshold": settings.get("cellprob_threshold", 0.0),
        "gan_resolution": int(gan_fields.shape[1]), "training_crops": len(train_crops),
        "heldout_crops": len(heldout_crops), "settings": {k: v for k, v in vars(config).items()
                                                            if k not in ("kimg", "snapshot_kimg")},
        "kimg": round(trained_kimg, 2), "sec_per_kimg": sec_per_kimg,
        "best": {
            "kimg": best["kimg"],
            "targets_met": targets(best, baselines),
            "pass_rate": pick("pass_rate", best),
            "diversity": {"real": pick("diversity", baselines["real"]), "gan": pick("diversity", best),
                          "simcep": pick("diversity", baselines["simcep"])},
            "cells_per_crop": {"real": pick("cells_per_crop", baselines["real"]), "gan": pick("cells_per_crop", best),
                               "simcep": pick("cells_per_crop", baselines["simcep"])},
            "objects_per_field_shares": {name: {k.removeprefix("density."): pick(k, record) for k in record
                                                if k.startswith("density.")}
                                         for name, record in (("real", baselines["real"]), ("gan", best),
                                                              ("simcep", baselines["simcep"]))},
            "layout_distance": {name: {k: pick(f"layout.{k}", record) for k in ("cells_per_crop",) + LAYOUT_KEYS}
                                for name, record in (("gan", best), ("simcep", baselines["simcep"]))},
            f"flow_{fid_key}": {"real": pick(fid_key, baselines["real"]), "gan": pick(fid_key, best),
                                "simcep": pick(fid_key, baselines["simcep"])},
        },
        "curve": [{**{k: pick(k, r) if k != "kimg" else r[k] for k in r}, "train_s": seconds.get(r["kimg"])}
                  for r in history],
        "first_snapshot_meeting_targets": next(
            ({"kimg": r["kimg"], "train_s": seconds.get(r["kimg"])} for r in history
             if all(targets(r, baselines).values())), None),
        "setup_s": round(train_start - started, 1),  # data, encoding and baselines before training
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.export:
        trained = {"command": "python benchmarks/converge_gan.py " + " ".join(sys.argv[1:]),
                   "data": report["data"], "demo_seed": args.demo_seed if "demo" in folders else None,
                   "settings": report["settings"], "downsample": args.downsample, "scales": report["scales"],
                   "kimg": report["kimg"],
                   "init_from": None if init_from is None else {
                       "spec": str(args.init_from), "nimg": init_from.get("nimg"),
                       "trained": init_from.get("trained"), "settings": init_from.get("config")},
                   "last_snapshot": report["curve"][-1]}
        print(f"weights written to {export_weights(state, args.export, trained)}", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plot_curve(history, baselines, fid_key, out / "converge_curve.png", " + ".join(folders))
        generator = build_generator(state["architecture"])
        generator.load_state_dict(torch.load(snapshots / f"G_ema-{round(best['kimg'] * 1000):08d}img.pt"))
        small = generate_images(generator, 8, seed=123, truncation_psi=args.truncation_psi, device=runtime.device)
        fake_fields = encoding.upscale_fields(small, args.downsample)
        fake_labels = encoding.decode_batch(fake_fields, cellprob_threshold=settings.get("cellprob_threshold", 0.0))
        figure = panel_grid([("real (held-out)", [("fields", heldout_fields[:8]), ("masks", heldout_crops[:8])]),
                             (f"GAN {best['kimg']:g} kimg", [("fields", fake_fields), ("masks", fake_labels)]),
                             ("SIMCEP", [("fields", simcep_fields[:8]), ("masks", simcep_labels[:8])])])
        figure.savefig(out / "converge_grid.png", dpi=80)
        (out / "converge_gan.json").write_text(json.dumps(report) + "\n")
    print(json.dumps(report))


def rescore(history: list[dict], snapshots: Path, architecture: dict, evaluate) -> list[dict]:
    """The history with every kept snapshot's metrics measured again (losses and p as recorded)."""
    recorded = {round(r["kimg"] * 1000): r for r in history}
    generator = build_generator(architecture)
    rescored = []
    for path in sorted(snapshots.glob("G_ema-*img.pt")):
        nimg = int(path.stem.split("-")[1].removesuffix("img"))
        generator.load_state_dict(torch.load(path))
        kept = {k: v for k, v in recorded.get(nimg, {}).items() if k in ("G_loss", "D_loss", "D_r1", "augment_p")}
        rescored.append({"kimg": nimg / 1000, **kept, **evaluate(generator)})
        print(json.dumps(rescored[-1]), file=sys.stderr)
    return rescored


def plot_curve(history: list[dict], baselines: dict, fid_key: str, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    panels = [("diversity", "sample diversity"), ("pass_rate", "filter pass rate"),
              ("cells_per_crop", "cells per kept crop"), (fid_key, f"flow {fid_key}"),
              ("layout.nn_distance", "layout distance: nn distance (px)"),
              ("layout.ripley_l", "layout distance: Ripley's L (px)")]
    kimg = [r["kimg"] for r in history]
    figure, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for axis, (key, label) in zip(axes.flat, panels):
        axis.plot(kimg, [r.get(key, np.nan) for r in history], "o-", ms=3, label="GAN")
        for name, style in (("real", "g--"), ("simcep", "r:")):
            value = baselines[name].get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                axis.axhline(value, color=style[0], linestyle=style[1:], label=name)
        axis.set_title(label, fontsize=9)
        axis.set_xlabel("kimg")
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(f"mask GAN learning curve: {title}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
