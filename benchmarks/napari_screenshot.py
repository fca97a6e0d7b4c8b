"""Open a synthetic dataset folder in napari exactly as docs/synthetic_data.md says, and save a screenshot.

    python benchmarks/napari_screenshot.py data/07_model_output/synthetic_dataset/<UTC time> docs/napari_synthetic.png

Needs napari with a Qt binding (``pip install "napari[pyqt5]"``) and a display; on a headless machine run
it under ``xvfb-run``. It imports nothing from cellsynth: it checks that the folder opens in napari as it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a synthetic dataset folder in the stardist layout")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--pair", type=int, default=0, help="which pair the slider shows")
    args = parser.parse_args()
    for sub in ("images", "masks"):
        if not (args.folder / sub).is_dir():
            raise SystemExit(f"{args.folder} has no {sub}/ folder: is it a synthesize output with layout stardist?")

    import napari

    viewer = napari.Viewer(show=False)
    images = viewer.open(str(args.folder / "images"), stack=True)[0]
    masks = viewer.open(str(args.folder / "masks"), stack=True, layer_type="labels")[0]
    masks.opacity = 0.4
    viewer.dims.set_point(0, args.pair)
    viewer.reset_view()
    viewer.window._qt_window.resize(900, 700)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False)
    viewer.close()
    print(json.dumps({"folder": str(args.folder), "screenshot": str(args.out), "pairs": int(images.data.shape[0]),
                      "image_layer": list(images.data.shape), "labels_layer": list(masks.data.shape),
                      "labels_dtype": str(masks.data.dtype)}))


if __name__ == "__main__":
    main()
