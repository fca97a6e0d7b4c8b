"""The transfer figure: the mask GAN's four targets against wall-clock minutes, for runs that start from a
shipped generator and for runs from scratch.

    python benchmarks/plot_transfer.py --out docs/transfer_curve.png RUN.json [RUN.json ...]

Each ``RUN.json`` is either the report of ``converge_gan.py`` (its curve carries ``train_s`` per
snapshot and ``setup_s``; the real and SIMCEP baselines sit in ``best``) or a recorded curve of an
earlier run (``benchmarks/recorded/*.json``: ``sec_per_kimg``, ``real`` and a ``curve`` of the same
four quantities). Minutes include the setup (crops, encoding, baselines) of a converge_gan run.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LAYOUT_KEYS = ("area", "eccentricity", "nn_distance", "orientation_coherence", "ripley_l")
PANELS = (("pass_rate", "filter pass rate", 0.7),
          ("diversity_ratio", "diversity / real", 0.7),
          ("cells_ratio", "cells per kept crop / real", (0.75, 1.25)),
          ("layout_closer_than_simcep", "layout distances closer than SIMCEP (of 5)", 3))


def series(path: Path) -> tuple[str, list[dict[str, float]]]:
    """A run's label and its points: minutes and the four target quantities."""
    report = json.loads(path.read_text())
    if "label" in report:  # a recorded curve (benchmarks/recorded)
        real = report["real"]
        return report["label"], [
            {"minutes": p["kimg"] * report["sec_per_kimg"] / 60, "pass_rate": p["pass_rate"],
             "diversity_ratio": p["diversity"] / real["diversity"],
             "cells_ratio": p["cells_per_crop"] / real["cells_per_crop"],
             "layout_closer_than_simcep": p["layout_closer_than_simcep"]} for p in report["curve"]]
    best = report["best"]
    real_diversity, real_cells = best["diversity"]["real"], best["cells_per_crop"]["real"]
    simcep = best["layout_distance"]["simcep"]
    data = report["data"] if isinstance(report["data"], str) else " + ".join(report["data"])
    start = "from scratch" if not report.get("init_from") else f"from {Path(report['init_from']).stem}"
    start += f", lr {report['settings']['learning_rate']:g}"
    points = []
    for record in report["curve"]:
        if record.get("train_s") is None:
            continue

        def number(key: str) -> float:
            value = record.get(key)
            return math.nan if value is None else float(value)

        closer = sum(number(f"layout.{k}") < simcep[k] for k in LAYOUT_KEYS if simcep.get(k) is not None)
        points.append({"minutes": (report["setup_s"] + record["train_s"]) / 60, "pass_rate": number("pass_rate"),
                       "diversity_ratio": number("diversity") / real_diversity,
                       "cells_ratio": number("cells_per_crop") / real_cells, "layout_closer_than_simcep": closer})
    return f"{Path(data).name}, {start}", points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", action="append", default=None,
                        help="legend entry of each run, in order (default: its data, start and learning rate)")
    args = parser.parse_args()
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    if args.label is not None and len(args.label) != len(args.runs):
        parser.error(f"{len(args.label)} --label for {len(args.runs)} runs")
    for index, path in enumerate(args.runs):
        label, points = series(path)
        label = args.label[index] if args.label else label
        for axis, (key, _, _) in zip(axes, PANELS):
            axis.plot([p["minutes"] for p in points], [p[key] for p in points], "o-", ms=3, label=label)
    for axis, (_, title, target) in zip(axes, PANELS):
        for line in target if isinstance(target, tuple) else (target,):
            axis.axhline(line, color="0.4", linestyle="--", linewidth=0.8)
        axis.set_title(f"{title} (target dashed)", fontsize=9)
        axis.set_xlabel("minutes on 2 CPU cores")
        axis.set_xscale("log")
    axes[0].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=90)
    print(json.dumps({"written": str(args.out), "runs": [str(p) for p in args.runs]}))


if __name__ == "__main__":
    main()
