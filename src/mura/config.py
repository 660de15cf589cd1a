"""Typed view of ``params.yaml``, the single source of configuration.

Each stage's ``main()`` calls :func:`load_params` once and passes the
relevant frozen dataclass down; library functions never open params.yaml.
Unknown keys are kept in :attr:`Params.raw` so that later sections (train,
ensemble, ...) can add their own dataclasses without touching this loader.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mura.errors import ConfigError

ResizePolicy = Literal["stretch", "pad"]
DuplicatePolicy = Literal["keep", "drop_later_split"]
DatasetName = Literal["mura", "fracture"]


@dataclass(frozen=True)
class DataParams:
    """``data:`` section: where the raw datasets live and the cache geometry."""

    mura_dir: str
    fracture_dir: str
    image_size: int = 320
    resize: ResizePolicy = "stretch"
    train_datasets: tuple[DatasetName, ...] = ("mura",)


@dataclass(frozen=True)
class IngestParams:
    """``ingest:`` section."""

    workers: int = 0
    max_quarantine_fraction: float = 0.05
    near_duplicate_distance: int = 4
    near_duplicate_min_correlation: float = 0.97
    duplicate_policy: DuplicatePolicy = "keep"
    max_pixels: int = 60_000_000


@dataclass(frozen=True)
class SplitParams:
    """``split:`` section."""

    test_fraction: float = 0.10


@dataclass(frozen=True)
class TrainParams:
    """``train:`` section, shared by the four variants (the seed's values are the defaults)."""

    epochs: int = 20
    batch_size: int = 8
    learning_rate: float = 1e-4
    monitor: Literal["val_auc", "val_loss"] = "val_auc"
    early_stopping_patience: int = 5
    reduce_lr_patience: int = 2
    reduce_lr_factor: float = 0.5
    min_lr: float = 1e-7
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    weights: str = "imagenet"
    frozen_epochs: int = 0
    batchnorm: Literal["auto", "frozen", "trainable"] = "auto"
    zero_init_residual: bool = True
    workers: int = 2


@dataclass(frozen=True)
class AugmentParams:
    """``augment:`` section: the seed's augmentation, applied in training only."""

    rotation: float = 20.0
    shift: float = 0.2
    zoom: float = 0.2
    horizontal_flip: bool = True
    fill_mode: Literal["nearest", "constant", "reflect", "wrap"] = "nearest"


@dataclass(frozen=True)
class ModelParams:
    """One entry of ``models:`` (a variant)."""

    arch: str
    oversample_abnormal: bool = False
    dense_units: int = 512
    dropout: float = 0.5


@dataclass(frozen=True)
class EnsembleParams:
    """``ensemble:`` section."""

    weights: dict[str, Any] = field(default_factory=dict)
    target_recall: float = 0.90
    batch_size: int = 32


@dataclass(frozen=True)
class EvaluateParams:
    """``evaluate:`` section."""

    bootstrap_resamples: int = 200
    ci_level: float = 0.95


@dataclass(frozen=True)
class RegisterParams:
    """``register:`` section."""

    model_name: str = "mura-ensemble"
    force_champion: bool = False
    operating_point: Literal["default", "high_sensitivity"] = "default"
    max_pixels: int = 40_000_000
    serve_batch_size: int = 8


@dataclass(frozen=True)
class Params:
    """The whole of params.yaml, typed where a stage needs it."""

    seed: int
    data: DataParams
    ingest: IngestParams = field(default_factory=IngestParams)
    split: SplitParams = field(default_factory=SplitParams)
    train: TrainParams = field(default_factory=TrainParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    models: dict[str, Any] = field(default_factory=dict)
    ensemble: EnsembleParams = field(default_factory=EnsembleParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    register: RegisterParams = field(default_factory=RegisterParams)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _check(value: Any, tp: Any, name: str) -> Any:
    """Validate ``value`` against the annotation ``tp``; return it converted."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"param '{name}' = {value!r}: expected one of {list(typing.get_args(tp))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"param '{name}' = {value!r}: expected a list")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_check(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"param '{name}': bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, name)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"param '{name}' = {value!r}: expected a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"param '{name}' = {value!r}: expected an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"param '{name}' = {value!r}: expected true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"param '{name}' = {value!r}: expected a string")
        return value
    if tp is Any or tp is dict or typing.get_origin(tp) is dict:
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {name}")


def build_dataclass(cls: type, values: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking every field's type.

    Args:
        cls: the dataclass type.
        values: mapping read from YAML.
        prefix: dotted name of the section, used in error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: a key is unknown, missing or of the wrong type.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"param section '{prefix}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "raw"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown param '{prefix}.{unknown[0]}' (known: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "raw" or not f.init:
            continue
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in values:
            kwargs[f.name] = _check(values[f.name], hints[f.name], dotted)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing param '{dotted}'")
    return cls(**kwargs)


def parse_params(doc: dict[str, Any]) -> Params:
    """Build :class:`Params` from the parsed params.yaml mapping.

    Args:
        doc: the YAML document as a dict.

    Returns:
        The typed parameters; sections this module does not type are in ``raw``.

    Raises:
        ConfigError: a typed section is invalid.
    """
    if not isinstance(doc, dict):
        raise ConfigError("params file must be a YAML mapping")
    typed = {k: doc[k] for k in ("seed", "data", "ingest", "split", "train", "augment", "models", "ensemble", "evaluate", "register") if k in doc}
    params = build_dataclass(Params, typed, "")
    for name in params.models:
        model_params(params, name)  # validate every variant up front
    object.__setattr__(params, "raw", doc)
    return params


def model_params(params: Params, variant: str) -> ModelParams:
    """The typed ``models.<variant>`` entry.

    Raises:
        ConfigError: no such variant, or an invalid entry.
    """
    if variant not in params.models:
        raise ConfigError(f"unknown model variant {variant!r} (params.yaml models: {', '.join(sorted(params.models))})")
    return build_dataclass(ModelParams, params.models[variant], f"models.{variant}")  # type: ignore[no-any-return]


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml.

    Args:
        path: the params file.

    Returns:
        The typed parameters.

    Raises:
        ConfigError: the file is missing, not YAML, or a value is invalid.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_params(doc)


def merge_params(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (used for the demo override).

    Args:
        base: the full params mapping.
        override: a partial mapping whose leaves replace those of ``base``; a
            ``null`` value removes the key (e.g. to drop a model variant).

    Returns:
        A new merged mapping; ``base`` is not modified.
    """
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_params(out[key], value)
        else:
            out[key] = value
    return out
