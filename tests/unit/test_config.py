from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mura.config import ModelSpec, SynthParams, load_params, merge_params, parse_params
from mura.errors import ConfigError


def test_repository_params_are_valid_and_hold_the_seed_defaults(repo_root: Path) -> None:
    params = load_params(repo_root / "params.yaml")
    assert params.data.image_size == 320
    assert params.split.test_fraction == pytest.approx(0.10)
    assert params.data.train_datasets == ("mura",)
    assert isinstance(params.seed, int)


BASE: dict[str, Any] = {"seed": 1, "data": {"mura_dir": "a", "fracture_dir": "b"}}


@pytest.mark.parametrize(
    "override,message",
    [
        ({"data": {"image_size": "big"}}, "data.image_size"),
        ({"data": {"resize": "crop"}}, "data.resize"),
        ({"data": {"train_datasets": ["mura", "knees"]}}, r"data.train_datasets\[1\]"),
        ({"ingest": {"wokers": 2}}, "ingest.wokers"),
        ({"split": {"test_fraction": "0.1"}}, "split.test_fraction"),
        ({"seed": True}, "seed"),
        ({"train": {"max_steps_per_epoch": -1}}, "train.max_steps_per_epoch"),
        ({"train": {"max_valid_images": -5}}, "train.max_valid_images"),
        ({"ensemble": {"max_studies": -1}}, "ensemble.max_studies"),
    ],
)
def test_bad_params_name_the_param(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_params(merge_params(BASE, override))


def test_missing_param() -> None:
    with pytest.raises(ConfigError, match="missing param 'data.mura_dir'"):
        parse_params({"seed": 1, "data": {"fracture_dir": "b"}})


def test_load_params_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_merge_is_deep_and_pure() -> None:
    merged = merge_params(BASE, {"data": {"image_size": 64}})
    assert merged["data"] == {"mura_dir": "a", "fracture_dir": "b", "image_size": 64}
    assert "image_size" not in BASE["data"]


def test_demo_override_is_valid(repo_root: Path) -> None:
    base = yaml.safe_load((repo_root / "params.yaml").read_text())
    demo = yaml.safe_load((repo_root / "params.demo.yaml").read_text())
    params = parse_params(merge_params(base, demo))
    assert params.data.image_size < 320


@pytest.mark.parametrize(
    "override,message",
    [
        ({"trian": {"epochs": 1}}, r"unknown param 'trian' \(did you mean 'train'\?"),
        ({"train": {"epoch": 1}}, r"unknown param 'train.epoch' \(did you mean 'epochs'\?"),
        ({"synth": {"patient": 3}}, r"unknown param 'synth.patient' \(did you mean 'patients'\?"),
        ({"models": {"x": {"arch": "simple_cnn", "dropuot": 0.1}}}, r"unknown param 'models.x.dropuot' \(did you mean 'dropout'"),
        ({"models": {"x": {"dropout": 0.1}}}, "missing param 'models.x.arch'"),
        ({"models": {"x": {"arch": "simple_cnn", "dense_units": "many"}}}, "models.x.dense_units"),
        ({"ensemble": {"variant_weights": {"a": "heavy"}}}, "ensemble.variant_weights.a"),
        ({"zzz": 1}, r"unknown param 'zzz' \(known: "),
    ],
)
def test_unknown_keys_anywhere_are_errors_with_a_suggestion(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_params(merge_params(BASE, override))


def test_every_section_is_typed(repo_root: Path) -> None:
    params = load_params(repo_root / "params.yaml")
    assert set(params.models) == {"densenet169_a", "densenet169_b", "resnet101_a", "resnet101_b"}
    spec = params.model("densenet169_b")
    assert isinstance(spec, ModelSpec) and spec.arch == "densenet169" and spec.oversample_abnormal is True
    assert isinstance(params.synth, SynthParams) and params.synth.patients == 400
    with pytest.raises(ConfigError, match="unknown model variant 'nope'"):
        params.model("nope")


def test_load_params_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**BASE, "trian": {}}))
    with pytest.raises(ConfigError, match=r"p.yaml: unknown param 'trian'"):
        load_params(tmp_path / "p.yaml")


def test_an_override_file_with_an_unknown_key_is_named(repo_root: Path, tmp_path: Path) -> None:
    from mura.workspace import create_workspace

    with pytest.raises(ConfigError, match=r"params.yaml merged with my.yaml: unknown param 'train.epohcs'"):
        create_workspace(repo_root, tmp_path / "ws", {"train": {"epohcs": 1}}, "my.yaml")
    assert not (tmp_path / "ws" / "params.yaml").exists()
