"""The synthetic dataset to take away: N pairs that cellsynth, StarDist's training loop and Cellpose read."""

from __future__ import annotations

import dataclasses
import json
from glob import glob
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from cellsynth.gan.pretrained import load_initial_weights
from cellsynth.image_painter import ImagePainter, collage_model
from cellsynth.io import read_dataset
from cellsynth.mask_generator import GenerationSettings, MaskSource
from cellsynth.phantom import demo_dataset
from cellsynth.synthesis import synthesize_dataset
from cellsynth.translation import ChannelNormalizer, UNetGenerator, mask_channels

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def masks() -> MaskSource:
    """The shipped demo generator with conf/base's filters (about two thirds of its masks pass)."""
    params = yaml.safe_load((REPO / "conf/base/parameters_mask_gan.yml").read_text())["mask_gan"]
    state = load_initial_weights("demo-phantom")
    return MaskSource.from_model({**state, "downsample": params["downsample"]}, "cellpose_flow",
                                 GenerationSettings.from_params(params["generation"]))


@pytest.fixture(scope="module")
def painter() -> ImagePainter:
    """An untrained pix2pix generator: what is tested is the plumbing, not the look of the images."""
    images = np.random.default_rng(0).integers(0, 4000, (4, 64, 64, 2)).astype(np.uint16)
    return ImagePainter(UNetGenerator(mask_channels("label"), 2, base_filters=4, depth=6, resolution=64),
                        ChannelNormalizer.fit(images), "label")


def test_stardist_layout_is_read_by_cellsynth_and_as_stardist_globs_it(masks, painter, tmp_path):
    folder = tmp_path / "synthetic"
    manifest = synthesize_dataset(folder, masks, painter, n=10, batch=8, seed=3, progress=False)
    samples = read_dataset(folder)
    assert len(samples) == 10 and manifest["kept"] == 10 and manifest["generated"] >= 10
    assert all(s.image.dtype == np.uint16 and s.image.shape == (64, 64, 2) for s in samples)  # as pix2pix learnt
    assert all(s.labels.max() >= masks.filters.min_objects for s in samples)  # only masks that passed the filters
    # StarDist's training examples: sorted globs of images/*.tif and masks/*.tif, read with imread
    images, labels = sorted(glob(str(folder / "images" / "*.tif"))), sorted(glob(str(folder / "masks" / "*.tif")))
    assert [Path(p).name for p in images] == [Path(p).name for p in labels]
    assert {tifffile.imread(p).dtype for p in labels} == {np.dtype(np.uint16)}
    written = json.loads((folder / "manifest.json").read_text())
    assert written == manifest and len(written["pairs"]) == 10
    pair = written["pairs"][0]
    assert pair["seed"] >= 3 and pair["consistency_error"] <= masks.filters.max_consistency_error
    assert pair["objects"] == int(tifffile.imread(folder / "masks" / f"{pair['stem']}.tif").max())
    assert len(written["mask_generator"]) == len(written["pix2pix"]) == 12


def test_the_collage_painter_paints_the_dataset_from_real_objects(masks, tmp_path):
    (image, labels), = demo_dataset(n_images=1, size=128, seed=5)
    crops = [(image[y:y + 64, x:x + 64], labels[y:y + 64, x:x + 64]) for y in (0, 64) for x in (0, 64)]
    collage = ImagePainter.from_model(collage_model(np.stack([c[1] for c in crops]).astype(np.int32),
                                                    np.stack([c[0] for c in crops])))
    manifest = synthesize_dataset(tmp_path / "synthetic", masks, collage, n=3, batch=8, progress=False)
    samples = read_dataset(tmp_path / "synthetic")
    assert len(samples) == 3 and all(s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8 for s in samples)
    assert "pix2pix" not in manifest and manifest["collage"]["objects"] > 0
    assert manifest["filters"]["match_scale"] is False and manifest["pairs"][0]["scale_factor"] == 1.0


def test_one_channel_images_are_written_as_plain_2d_images(masks, tmp_path):
    """Grayscale in, grayscale out: (H, W), not (H, W, 1), which napari would stack as a 4-D volume."""
    images = np.random.default_rng(1).integers(0, 255, (4, 64, 64, 1)).astype(np.uint8)
    gray = ImagePainter(UNetGenerator(mask_channels("label"), 1, base_filters=4, depth=6, resolution=64),
                        ChannelNormalizer.fit(images), "label")
    synthesize_dataset(tmp_path / "synthetic", masks, gray, n=3, batch=8, progress=False)
    written = [tifffile.imread(p) for p in sorted((tmp_path / "synthetic" / "images").glob("*.tif"))]
    assert len(written) == 3 and all(w.shape == (64, 64) and w.dtype == np.uint8 for w in written)


def test_cellpose_layout_is_read_by_cellpose(masks, painter, tmp_path):
    from cellpose import io as cellpose_io

    folder = tmp_path / "synthetic"
    synthesize_dataset(folder, masks, painter, n=5, batch=8, layout="cellpose", progress=False)
    images, labels, names, *_ = cellpose_io.load_train_test_data(str(folder), mask_filter="_masks")
    assert len(images) == len(labels) == len(names) == 5
    assert all(label.max() >= masks.filters.min_objects for label in labels)


def test_bad_requests_fail_clearly_and_write_nothing(masks, painter, tmp_path):
    folder = tmp_path / "synthetic"
    with pytest.raises(ValueError, match="synthesize.n"):
        synthesize_dataset(folder, masks, painter, n=0)
    with pytest.raises(ValueError, match="synthesize.layout"):
        synthesize_dataset(folder, masks, painter, n=1, layout="napari")
    impossible = MaskSource(masks.generator, masks.downsample,
                            filters=dataclasses.replace(masks.filters, min_objects=10_000))
    with pytest.raises(RuntimeError, match="passed the filters"):
        synthesize_dataset(folder, impossible, painter, n=2, batch=4, max_fields=8, progress=False)
    assert not folder.exists() and list(tmp_path.iterdir()) == []  # no half-written folder left behind


def test_synthesize_pipeline_reads_only_parameters_that_exist():
    """The training nodes are reused under the namespace ``synthesize``: their parameters keep their
    names (a namespaced ``params:synthesize.mask_gan`` would not exist), except training_scope."""
    from kedro.config import OmegaConfigLoader

    from cellsynth.pipelines.synthesize import create_pipeline
    from cellsynth.settings import CONFIG_LOADER_ARGS

    params = OmegaConfigLoader(str(REPO / "conf"), **{k: v for k, v in CONFIG_LOADER_ARGS.items()
                                                      if k != "default_run_env"}, env="base")["parameters"]
    inputs = create_pipeline().inputs()
    assert inputs and all(name.startswith("params:") for name in inputs)  # everything else is made inside
    for name in inputs:
        value = params
        for key in name.removeprefix("params:").split("."):
            value = value[key]  # a KeyError names a parameter that does not exist
    assert "params:synthesize.training_scope" in inputs and params["synthesize"]["training_scope"] == "all"
    assert create_pipeline().outputs() == {"synthetic_dataset_manifest"}


def test_the_synthesize_pipeline_trains_on_every_image_and_writes_the_dataset(project: Path):
    """A real ``kedro run --pipeline=synthesize``: the group ``all``'s mask GAN and pix2pix, each written to
    its own model file by its own node, then the pairs."""
    from conftest import PIX2PIX_TINY, run

    run(project, {**PIX2PIX_TINY, "synthesize.n": 4, "synthesize.batch": 4}, pipeline="synthesize")
    for folder in ("mask_gan", "pix2pix"):
        (version,) = list((project / f"data/06_models/{folder}/synthesize.all.pt").iterdir())
        assert (version / "synthesize.all.pt").is_file()
    manifest = json.loads((project / "data/08_reporting/synthetic_dataset.json").read_text())
    pairs = read_dataset(manifest["folder"])
    assert manifest["kept"] == len(pairs) == 4 and all(p.image.shape[:2] == (32, 32) for p in pairs)
