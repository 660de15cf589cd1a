"""register's champion rule end to end: each new version is compared with the champion on the same test studies.

One store, versions registered in turn with the register stage itself (Keras runtime: no export, to
keep it short): v1 has no champion to beat; v2 (the same variants: non-inferior) is promoted; v3
must beat it by a whole kappa and is kept out; v4 is forced in and recorded as forced; then the
champion's files disappear, and v5 stops with one line and promotes nothing, until v6 is forced.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from mura.config import PromotionParams
from mura.errors import DataError
from tests.e2e.conftest import register_variants, tiny_variants

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    keras_only = {"runtime": "keras", "int8": False}  # no export: the comparison is what is tested here
    return register_variants(repo_root, tmp_path_factory.mktemp("promotion"), tiny_variants(), keras_only)


def _register(store: dict[str, Any], monkeypatch: pytest.MonkeyPatch, **change: Any) -> dict[str, Any]:
    from mura.packaging.register import run_register

    params = store["params"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.chdir(store["ws"])
    register = dataclasses.replace(params.register, **change)
    size, resize = params.data.image_size, params.data.resize
    result: dict[str, Any] = run_register(["tiny_a", "tiny_b"], register, size, resize, store["inputs"])
    return result


def _champion(store: dict[str, Any]) -> tuple[str, Any]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store["uri"])
    return str(client.get_model_version_by_alias("mura-ensemble", "champion").version), client


def test_promote_keep_force_and_a_champion_that_cannot_be_loaded(store: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    first = store["first"]
    assert first["champion"] and first["promotion"]["reason"] == "no champion yet"

    second = _register(store, monkeypatch)  # the same variants: the same answers, non-inferior
    comparison = second["promotion"]["comparison"]
    assert second["champion"] and second["promotion"]["reason"].startswith("promoted: non-inferior")
    assert comparison["champion_version"] == "1" and comparison["studies"] == 8 and comparison["difference"] == 0.0
    champion, client = _champion(store)
    assert champion == "2"
    tags = client.get_model_version("mura-ensemble", "2").tags
    assert tags["promotion_decision"] == "promoted" and tags["promotion_compared_with"] == "1"
    run = client.get_run(second["run_id"])
    assert run.data.metrics["promotion_kappa_difference"] == 0.0 and run.data.tags["promotion_forced"] == "false"

    unbeatable = PromotionParams(margin=-1.0, bootstrap=200)
    third = _register(store, monkeypatch, promotion=unbeatable)
    assert not third["champion"] and third["promotion"]["reason"].startswith("kept the champion: not shown non-inferior")
    assert _champion(store)[0] == "2"
    assert client.get_model_version("mura-ensemble", "3").tags["promotion_decision"] == "kept champion"

    fourth = _register(store, monkeypatch, promotion=unbeatable, force_champion=True)
    assert fourth["champion"] and fourth["promotion"]["forced"] and fourth["promotion"]["reason"].startswith("forced")
    assert _champion(store)[0] == "4" and client.get_model_version("mura-ensemble", "4").tags["promotion_forced"] == "true"

    # The champion's files are gone (a cleaned bucket, a deleted run): nothing can be compared with it.
    source = client.get_model_version("mura-ensemble", "4").source
    logged = client.get_logged_model(source.removeprefix("models:/"))
    shutil.rmtree(urlparse(logged.artifact_location).path)
    refused = r"cannot load the champion mura-ensemble version 4 .*\(nothing promoted\).*force_champion"
    with pytest.raises(DataError, match=refused):
        _register(store, monkeypatch)
    assert _champion(store)[0] == "4"
    assert "promotion_decision" not in client.get_model_version("mura-ensemble", "5").tags

    sixth = _register(store, monkeypatch, force_champion=True)  # the emergency way out, recorded as such
    assert sixth["champion"] and sixth["promotion"]["reason"] == "forced (register.force_champion), without a comparison"
    assert _champion(store)[0] == "6"
