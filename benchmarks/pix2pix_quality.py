"""How real do pix2pix's images look? Trains pix2pix on the crops of the training images and paints
the masks of held-out images; prints one JSON line.

    python benchmarks/pix2pix_quality.py --data ../shared/data/dsb2018/fluo [--epochs 10]
        [--set upsample=transposed ...] [--out DIR]

The images are split as ``converge_gan.py`` splits them (``--heldout`` of them held out, the same
seed). Training crops (``--res`` pixels, with rotations, as data_prep makes them) train pix2pix
with the settings of ``conf/base/parameters_image_translation.yml`` changed by ``--set``; the
held-out crops' masks are translated and their images compared with the real ones: PSNR and SSIM
pair by pair, FID/KID of the set, and how much nucleus brightness varies against the real images
(``brightness_spread_ratio``; region codes, with ``--set intensity_codes=true``, are drawn from the
training crops as at generation). The floor is the same FID of real training crops against the
held-out ones. ``--out`` gets a grid of masks, real and painted images, and the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from cellsynth import crops, io, phantom, quality
from cellsynth.figures import panel_grid
from cellsynth.image_painter import ImagePainter
from cellsynth.training import CheckpointStore, start_runtime
from cellsynth.training.config import parse_overrides
from cellsynth.translation import ChannelNormalizer, Pix2PixConfig, train_pix2pix
from cellsynth.translation.codes import CodeBank

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="demo", help="annotated folder (images/, masks/) or 'demo'")
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=None, help="default: image_translation.training.epochs")
    parser.add_argument("--heldout", type=float, default=0.25)
    parser.add_argument("--max-train", type=int, default=None, help="use at most this many training crops")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an image_translation.training setting (YAML value)")
    parser.add_argument("--config", default=str(ROOT / "conf/base/parameters_image_translation.yml"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()

    samples = (io.read_dataset(args.data) if args.data != "demo" else
               [io.AnnotatedImage(f"phantom_{i:03d}", image, labels)
                for i, (image, labels) in enumerate(phantom.demo_dataset(6, 256, seed=0))])
    order = np.random.default_rng(args.seed).permutation(len(samples))
    n_heldout = max(1, round(args.heldout * len(samples)))
    if len(samples) - n_heldout < 1:
        raise SystemExit(f"{args.data}: {len(samples)} image(s) cannot be split into training and held-out images")
    training = crops.crops_from_images([samples[i] for i in order[n_heldout:]], size=args.res, stride=args.res,
                                       rotations=True)
    heldout = crops.crops_from_images([samples[i] for i in order[:n_heldout]], size=args.res, stride=args.res,
                                      rotations=False)
    if args.max_train and len(training["labels"]) > args.max_train:
        keep = np.sort(np.random.default_rng(args.seed).choice(len(training["labels"]), args.max_train, False))
        training = {k: v[keep] for k, v in training.items() if isinstance(v, np.ndarray)}

    params = yaml.safe_load(Path(args.config).read_text())["image_translation"]["training"]
    params.update(parse_overrides(args.set))
    if args.epochs is not None:
        params.update(epochs=args.epochs, decay_epochs=min(params["decay_epochs"], args.epochs))
    config = Pix2PixConfig.from_params(params)
    runtime = start_runtime("cpu", "fp32", seed=args.seed)
    print(f"{len(training['labels'])} training crops, {len(heldout['labels'])} held-out crops; {config}",
          file=sys.stderr)
    train_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        result = train_pix2pix(training["labels"], training["images"], config, CheckpointStore(Path(work)), runtime)
    train_s = time.perf_counter() - train_start

    normalizer = ChannelNormalizer.from_dict(result.normalizer)
    painter = ImagePainter(result.generator, normalizer, result.representation,
                           None if result.codes is None else CodeBank.from_dict(result.codes))
    painted = painter.paint(heldout["labels"], seed=args.seed)
    real = normalizer.forward(heldout["images"])
    features = quality.inception_features()
    reference = quality.extract_features(quality.feature_images(real), features, name="held-out images")
    scores = quality.translation_quality(real, normalizer.forward(painted), features, reference, heldout["labels"])
    floor = quality.image_quality(reference, quality.feature_images(normalizer.forward(training["images"])),
                                  features=features)
    report = {"data": args.data, "resolution": args.res, "training_crops": len(training["labels"]),
              "heldout_crops": len(heldout["labels"]), "settings": vars(config), "train_s": round(train_s, 1),
              "pix2pix": {k: round(v, 4) for k, v in scores.items()},
              "real_training_crops": {k: round(v, 4) for k, v in floor.items()},
              "last_epoch": result.history[-1] if result.history else None,
              "wall_s": round(time.perf_counter() - started, 1)}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        shown = slice(0, 8)
        figure = panel_grid([("held-out", [("masks", heldout["labels"][shown]), ("real", heldout["images"][shown]),
                                           ("pix2pix", painted[shown])])])
        figure.savefig(out / "pix2pix_quality_grid.png", dpi=80)
        (out / "pix2pix_quality.json").write_text(json.dumps(report) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
