"""The configuration environments: conf/paper and conf/workstation name only what they change, and change
exactly that."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kedro.config import OmegaConfigLoader

from cellsynth.gan.pretrained import SHIPPED
from cellsynth.gan.training import GANConfig
from cellsynth.settings import CONFIG_LOADER_ARGS
from cellsynth.study import CONTROLS
from cellsynth.translation import Pix2PixConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


def parameters(tmp_path: Path, env: str | None) -> dict:
    """The parameters of conf/base merged with those of ``env`` (None: base alone), the way Kedro's
    session merges them; conf/local is left out."""
    source = tmp_path / "conf"
    source.mkdir(exist_ok=True)
    for name in ("base", "paper", "workstation"):
        if not (source / name).exists():
            (source / name).symlink_to(CONF / name)
    (source / "empty").mkdir(exist_ok=True)
    loader = OmegaConfigLoader(str(source), env=env or "empty", **{k: v for k, v in CONFIG_LOADER_ARGS.items()
                                                                   if k != "default_run_env"})
    return loader["parameters"]


def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value of every non-mapping value."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.parametrize("env", ["paper", "workstation"])
def test_an_environment_changes_exactly_the_keys_its_files_name(tmp_path: Path, env: str):
    base, merged = leaves(parameters(tmp_path, None)), leaves(parameters(tmp_path, env))
    named: dict[str, object] = {}
    for path in sorted((CONF / env).glob("parameters*.yml")):
        named.update(leaves(yaml.safe_load(path.read_text())))
    assert set(merged) == set(base) | set(named)  # nothing of base is lost in the merge
    changed = {key for key in merged if merged[key] != base.get(key)}
    assert changed == set(named), f"conf/{env} names a key with base's value, or changes one it does not name"
    assert merged["mask_gan.generation.min_objects"] == base["mask_gan.generation.min_objects"]  # kept from base


def test_paper_and_workstation_settings_are_the_ones_they_promise(tmp_path: Path):
    paper, workstation = parameters(tmp_path, "paper"), parameters(tmp_path, "workstation")
    assert paper["mask_gan"]["training"]["channel_base"] == 16384 and paper["data_prep"]["folds"]["k"] == 5
    assert workstation["mask_gan"]["init_from"] in SHIPPED  # fine-tunes a shipped generator
    assert set(workstation["augmentation"]["controls"]) == set(CONTROLS)
    assert workstation["subsets"]["fractions"] == [0.25]


@pytest.mark.parametrize("env", [None, "paper", "workstation"])
def test_every_environment_gives_valid_settings(tmp_path: Path, env: str | None):
    params = parameters(tmp_path, env)
    GANConfig.from_params(params["mask_gan"]["training"])
    Pix2PixConfig.from_params(params["image_translation"]["training"])
