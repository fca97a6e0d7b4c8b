"""The configuration environments: conf/paper names only what it changes, and changes exactly that."""

from __future__ import annotations

from pathlib import Path

import yaml
from kedro.config import OmegaConfigLoader

from cellsynth.gan.training import GANConfig
from cellsynth.settings import CONFIG_LOADER_ARGS

CONF = Path(__file__).resolve().parents[1] / "conf"


def parameters(tmp_path: Path, env: str | None) -> dict:
    """The parameters of conf/base merged with those of ``env`` (None: base alone), the way Kedro's
    session merges them; conf/local is left out."""
    source = tmp_path / "conf"
    source.mkdir(exist_ok=True)
    for name in ("base", "paper"):
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


def test_paper_changes_exactly_the_keys_its_files_name(tmp_path: Path):
    base, paper = leaves(parameters(tmp_path, None)), leaves(parameters(tmp_path, "paper"))
    named: dict[str, object] = {}
    for path in sorted((CONF / "paper").glob("parameters*.yml")):
        named.update(leaves(yaml.safe_load(path.read_text())))
    assert set(paper) == set(base) | set(named)  # nothing of base is lost in the merge
    changed = {key for key in paper if paper[key] != base.get(key)}
    assert changed == set(named), "conf/paper names a key with base's value, or changes one it does not name"
    assert paper["mask_gan.training.channel_base"] == 16384 and paper["data_prep.folds.k"] == 5
    assert paper["mask_gan.generation.min_objects"] == base["mask_gan.generation.min_objects"]  # kept from base


def test_both_environments_give_valid_gan_settings(tmp_path: Path):
    for env in (None, "paper"):
        GANConfig.from_params(parameters(tmp_path, env)["mask_gan"]["training"])
