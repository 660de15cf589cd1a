"""Typed view of ``params.yaml``, the single source of configuration.

Each stage's ``main()`` calls :func:`load_params` once and passes the section
(or model spec) it needs down; library functions never open params.yaml.
Every section is typed and strict: an unknown key anywhere is an error that
names it (with a suggestion when it is close to a known key), a value of the
wrong type is an error naming the param.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mura.errors import ConfigError

__all__ = [
    "AugmentParams",
    "DataParams",
    "EnsembleParams",
    "EvaluateParams",
    "IngestParams",
    "ModelSpec",
    "Params",
    "RegisterParams",
    "SplitParams",
    "SynthParams",
    "TrainParams",
    "build_dataclass",
    "load_params",
    "merge_params",
    "parse_params",
]

ResizePolicy = Literal["stretch", "pad"]
DuplicatePolicy = Literal["keep", "drop_later_split"]
DatasetName = Literal["mura", "fracture"]
ServingRuntime = Literal["auto", "optimized", "keras"]  # see mura.runtime.runners
Precision = Literal["f32", "bf16", "int8"]  # inference precisions of the optimized runtime


@dataclass(frozen=True)
class DataParams:
    """``data:`` section: where the raw datasets live and the cache geometry."""

    mura_dir: str
    fracture_dir: str
    image_size: int = 320
    resize: ResizePolicy = "stretch"
    train_datasets: tuple[DatasetName, ...] = ("mura",)
    feedback_dir: str = "data/feedback"  # `mura feedback export`'s folders: always in the train split
    external_dir: str = "data/external"  # FracAtlas/ and GRAZPEDWRI-DX/ as downloaded: the external test split


@dataclass(frozen=True)
class IngestParams:
    """``ingest:`` section."""

    workers: int = 0
    max_quarantine_fraction: float = 0.05
    near_duplicate_distance: int = 4
    near_duplicate_min_correlation: float = 0.97
    duplicate_policy: DuplicatePolicy = "keep"
    max_pixels: int = 60_000_000  # per image file of the datasets (decompression-bomb limit)


@dataclass(frozen=True)
class SplitParams:
    """``split:`` section."""

    test_fraction: float = 0.10


@dataclass(frozen=True)
class SynthParams:
    """``synth:`` section: size of the synthetic phantom datasets written by ``mura synth``."""

    patients: int = 60  # MURA-layout patients (1-3 studies of 1-4 views each)
    fracture_images: int = 120  # Bone-Fracture-layout images (0: skip that dataset)
    conspicuity: float = 1.0  # size/contrast of the planted findings (1: as drawn for 320² and up; the demo's 64² needs more)


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
    pretrained: str = "imagenet"  # backbone initialisation: imagenet | none | path to a no-top weights file
    frozen_epochs: int = 0
    batchnorm: Literal["auto", "frozen", "trainable"] = "auto"
    zero_init_residual: bool = True
    batchnorm_momentum: float = (
        0.99  # Keras's default; short trainings from scratch need less (0.9), or inference runs on stale statistics
    )
    workers: int = 2
    max_steps_per_epoch: int = 0  # 0: every batch; >0: at most this many per epoch, a new random subset each (rehearsals)
    max_valid_images: int = 0  # 0: every valid image; >0: a seeded subset of this many for val_auc (rehearsals)

    def __post_init__(self) -> None:
        if self.max_steps_per_epoch < 0 or self.max_valid_images < 0:
            raise ConfigError("train.max_steps_per_epoch and train.max_valid_images must be 0 (no limit) or positive")
        if not 0.0 <= self.batchnorm_momentum < 1.0:
            raise ConfigError(f"train.batchnorm_momentum={self.batchnorm_momentum}: must be in [0, 1)")


@dataclass(frozen=True)
class AugmentParams:
    """``augment:`` section: the seed's augmentation, applied in training only."""

    rotation: float = 20.0
    shift: float = 0.2
    zoom: float = 0.2
    horizontal_flip: bool = True
    fill_mode: Literal["nearest", "constant", "reflect", "wrap"] = "nearest"


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``models:`` (a variant): backbone, oversampling and the classification head."""

    arch: str
    oversample_abnormal: bool = False
    dense_units: int = 512
    dropout: float = 0.5
    learning_rate: float | None = None  # this variant's own rate; None: train.learning_rate


@dataclass(frozen=True)
class EnsembleParams:
    """``ensemble:`` section."""

    variant_weights: dict[str, float] = field(default_factory=dict)  # missing or empty: equal weights
    target_recall: float = 0.90  # the high-sensitivity operating point (chosen by `calibrate` on valid studies)
    target_specificity: float = 0.90  # the high-specificity operating point (idem)
    batch_size: int = 32
    max_studies: int = 0  # 0: every study; >0: a seeded subset of this many studies per split (rehearsals)

    def __post_init__(self) -> None:
        if self.max_studies < 0:
            raise ConfigError(f"ensemble.max_studies must be 0 (no limit) or positive, got {self.max_studies}")


CalibrationMethod = Literal["temperature", "isotonic", "none"]


@dataclass(frozen=True)
class CalibrateParams:
    """``calibrate:`` section: the post-hoc calibration of the ensemble's study probability."""

    method: CalibrationMethod = "temperature"
    bins: int = 15  # equal-width (and equal-mass) bins of ECE and the reliability diagrams
    folds: int = 5  # out-of-fold check on valid: the map is kept only if it lowers neither ECE nor Brier there

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ConfigError(f"calibrate.bins must be at least 2, got {self.bins}")
        if self.folds < 2:
            raise ConfigError(f"calibrate.folds must be at least 2, got {self.folds}")


@dataclass(frozen=True)
class EvaluateParams:
    """``evaluate:`` section."""

    bootstrap_resamples: int = 200
    ci_level: float = 0.95


@dataclass(frozen=True)
class LocalizeParams:
    """``localize:`` section: the box levels and the localisation measured on annotated images."""

    annotations: tuple[str, ...] = ()  # COCO files beyond the phantoms' (data.mura_dir/synthetic_findings.coco.json)
    # The heat levels of the boxes where no annotated image can choose them (e.g. MURA alone: no boxes).
    default_levels: dict[str, float] = field(default_factory=lambda: {"high_sensitivity": 0.5, "high_specificity": 0.7})


@dataclass(frozen=True)
class PromotionParams:
    """``register.promotion``: champion vs challenger, scored on the same test studies (mura.packaging.promotion)."""

    metric: Literal["kappa", "roc_auc"] = "kappa"  # study level: kappa of the served labels, AUC of the probabilities
    margin: float = 0.02  # non-inferiority: promote if the paired CI of (new − champion) stays above −margin
    bootstrap: int = 1000  # patient-level paired bootstrap replicates
    level: float = 0.95  # the CI's confidence level


@dataclass(frozen=True)
class RegisterParams:
    """``register:`` section."""

    model_name: str = "mura-ensemble"
    force_champion: bool = False
    promotion: PromotionParams = field(default_factory=PromotionParams)
    operating_point: Literal["default", "high_sensitivity"] = "default"
    max_pixels: int = 40_000_000  # per uploaded image at serving time
    serve_batch_size: int = 8
    runtime: ServingRuntime = "auto"  # what serves (MURA_RUNTIME overrides at serve time)
    int8: bool = True  # also export an int8 model (NNCF post-training quantization on training images)
    int8_calibration_images: int = 300  # training images NNCF calibrates on (NNCF's default subset size)
    export_workers: int = 0  # processes exporting and quantizing the variants; 0 = one per core, 1 = in the stage's process
    reduced_max_abs_dp: float = 0.01  # bf16/int8 serve only if |Δp| vs Keras stays within this on valid ...
    reduced_min_agreement: float = 0.995  # ... and this share of valid study labels agree at every operating point


@dataclass(frozen=True)
class ServeParams:
    """``serve:`` section: the last stage serves the version ``register`` made with ``mlflow models serve`` and checks it."""

    enabled: bool = True  # false: the stage records that it was skipped (a pipeline step without a free loopback port)
    port: int = 0  # 0: a free loopback port
    startup_timeout_s: float = 300.0  # MLflow's start-up plus the model's load and warm-up
    warm_requests: int = 5  # requests after the first, for the warm latency's p50/p95


@dataclass(frozen=True)
class Params:
    """The whole of params.yaml, one typed section per stage (``models`` maps variant → spec)."""

    seed: int
    data: DataParams
    ingest: IngestParams = field(default_factory=IngestParams)
    split: SplitParams = field(default_factory=SplitParams)
    synth: SynthParams = field(default_factory=SynthParams)
    train: TrainParams = field(default_factory=TrainParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    ensemble: EnsembleParams = field(default_factory=EnsembleParams)
    calibrate: CalibrateParams = field(default_factory=CalibrateParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    localize: LocalizeParams = field(default_factory=LocalizeParams)
    register: RegisterParams = field(default_factory=RegisterParams)
    serve: ServeParams = field(default_factory=ServeParams)

    def model(self, variant: str) -> ModelSpec:
        """The spec of one variant.

        Raises:
            ConfigError: no such variant under ``models:``.
        """
        if variant not in self.models:
            raise ConfigError(f"unknown model variant {variant!r} (params.yaml models: {', '.join(sorted(self.models))})")
        return self.models[variant]


# A scalar annotation: (does the YAML value fit, what was expected, the conversion). bool is an int in
# Python but never a number here.
_SCALARS: dict[Any, tuple[Callable[[Any], bool], str, Callable[[Any], Any]]] = {
    float: (lambda v: not isinstance(v, bool) and isinstance(v, (int, float)), "a number", float),
    int: (lambda v: not isinstance(v, bool) and isinstance(v, int), "an integer", int),
    bool: (lambda v: isinstance(v, bool), "true or false", bool),
    str: (lambda v: isinstance(v, str), "a string", str),
}


def _check(value: Any, tp: Any, name: str) -> Any:
    """Validate ``value`` against the annotation ``tp``; return it converted."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"param '{name}' = {value!r}: expected one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        return _check_union(value, typing.get_args(tp), name)
    if origin in (tuple, dict):
        return _check_container(value, tp, name)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(typing.cast(type, tp), value, name)
    if tp in _SCALARS:
        fits, expected, convert = _SCALARS[tp]
        if not fits(value):
            raise ConfigError(f"param '{name}' = {value!r}: expected {expected}")
        return convert(value)
    if tp is Any:
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {name}")


def _check_union(value: Any, args: tuple[Any, ...], name: str) -> Any:
    """The first member of a union (``X | None``) that takes ``value``; the first member's error otherwise."""
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


def _check_container(value: Any, tp: Any, name: str) -> Any:
    """A ``tuple[X, ...]`` from a YAML list, a ``dict[K, V]`` from a mapping, each item checked."""
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"param '{name}' = {value!r}: expected a list")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_check(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value))
    if not isinstance(value, dict):
        raise ConfigError(f"param '{name}' = {value!r}: expected a mapping")
    key_tp, value_tp = typing.get_args(tp)
    return {_check(k, key_tp, f"{name} key"): _check(v, value_tp, f"{name}.{k}") for k, v in value.items()}


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
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(map(str, values)) - known)
    if unknown:
        raise ConfigError(unknown_key_message(f"{prefix}.{unknown[0]}" if prefix else unknown[0], known))
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in values:
            kwargs[f.name] = _check(values[f.name], hints[f.name], dotted)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing param '{dotted}'")
    return cls(**kwargs)


def unknown_key_message(dotted: str, known: set[str]) -> str:
    """``unknown param 'trian' (did you mean 'train'?; known: ...)``."""
    leaf = dotted.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown param '{dotted}' ({hint}known: {', '.join(sorted(known))})"


def parse_params(doc: dict[str, Any]) -> Params:
    """Build :class:`Params` from the parsed params.yaml mapping.

    Args:
        doc: the YAML document as a dict.

    Returns:
        The typed parameters.

    Raises:
        ConfigError: an unknown key, a missing param or a value of the wrong type.
    """
    if not isinstance(doc, dict):
        raise ConfigError("params file must be a YAML mapping")
    params: Params = build_dataclass(Params, doc, "")
    return params


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
    try:
        return parse_params(doc)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


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
