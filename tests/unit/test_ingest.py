from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mura.config import DataParams, IngestParams
from mura.data.ingest import check_quarantine, ingest
from mura.errors import ConfigError, DataError


def _data(raw: Path, size: int = 32, **kw: object) -> DataParams:
    return DataParams(
        mura_dir=str(raw / "MURA-v1.1"),
        fracture_dir=str(raw / "Bone_Fracture_Binary_Classification"),
        image_size=size,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def ingested(synthetic_raw: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ingest") / "pixels.npy"
    return ingest(_data(synthetic_raw), IngestParams(workers=2), out, progress=False), out


def test_counts_add_up_and_cache_matches(ingested) -> None:
    result, pixels_path = ingested
    summary = result.summary
    for name, counts in summary["datasets"].items():
        assert counts["listed"] == counts["ingested"] + counts["quarantined"] + counts["duplicates_dropped"], name
    cache = np.load(pixels_path, mmap_mode="r")
    assert cache.shape == (len(result.images), 32, 32) and cache.dtype == np.uint8
    assert summary["synthetic"] is True and result.images["synthetic"].all()
    assert not pixels_path.with_name("pixels.npy.partial").exists()


def test_defects_are_quarantined_with_reasons(ingested) -> None:
    result, _ = ingested
    assert sorted(result.quarantine["reason"]) == ["empty", "missing", "truncated", "undecodable"]
    assert not set(result.quarantine["image_id"]) & set(result.images["image_id"])
    assert not result.images["path"].str.contains(r"/\._|DS_Store").any()


def test_leaked_copies_reported(ingested) -> None:
    result, _ = ingested
    dups = result.duplicates
    leaked = dups[dups["path"].str.contains("/aug_")]
    assert len(leaked) >= 2 and set(leaked["kind"]) == {"exact", "near"}
    assert dups.loc[dups["path"].str.contains("/aug_"), "cross_split"].all()


def test_cache_rows_follow_listing(ingested, synthetic_raw: Path) -> None:
    from mura.data.imaging import prepare_image

    result, pixels_path = ingested
    cache = np.load(pixels_path, mmap_mode="r")
    for i in (0, len(result.images) // 2, len(result.images) - 1):
        row = result.images.iloc[i]
        base = (
            synthetic_raw
            if row["dataset"] == "mura"
            else synthetic_raw / "Bone_Fracture_Binary_Classification/Bone_Fracture_Binary_Classification"
        )
        expected = prepare_image((base / row["path"]).read_bytes(), 32, "stretch", 10**7).pixels
        np.testing.assert_array_equal(cache[i], expected)


def test_drop_policy_compacts_cache(synthetic_raw: Path, tmp_path: Path) -> None:
    keep = ingest(_data(synthetic_raw), IngestParams(workers=1), tmp_path / "keep.npy", progress=False)
    drop = ingest(
        _data(synthetic_raw), IngestParams(workers=1, duplicate_policy="drop_later_split"), tmp_path / "drop.npy", progress=False
    )
    dropped = set(drop.duplicates.loc[drop.duplicates["action"] == "dropped", "image_id"])
    assert dropped and all(not i.startswith("mura:") or "/train/" not in i for i in dropped)
    assert len(drop.images) == len(keep.images) - len(dropped)
    a, b = np.load(tmp_path / "keep.npy"), np.load(tmp_path / "drop.npy")
    kept_rows = np.flatnonzero(~keep.images["image_id"].isin(dropped).to_numpy())
    np.testing.assert_array_equal(a[kept_rows], b)
    assert drop.summary["duplicates_dropped"] == len(dropped)


def test_an_empty_dataset_folder_leaves_that_dataset_out(synthetic_raw: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"junk")
    data = DataParams(mura_dir=str(synthetic_raw / "MURA-v1.1"), fracture_dir=str(tmp_path / "empty"), image_size=16)
    result = ingest(data, IngestParams(workers=1), tmp_path / "p.npy", progress=False)
    assert result.summary["datasets"]["fracture"]["present"] is False
    assert set(result.images["dataset"]) == {"mura"}


@pytest.mark.parametrize("missing", ["mura_dir", "fracture_dir"])
def test_a_missing_configured_folder_names_the_param(synthetic_raw: Path, tmp_path: Path, missing: str) -> None:
    dirs = {
        "mura_dir": str(synthetic_raw / "MURA-v1.1"),
        "fracture_dir": str(synthetic_raw / "Bone_Fracture_Binary_Classification"),
    }
    dirs[missing] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=f"^data.{missing}=.*nowhere.*: no such folder"):
        ingest(
            DataParams(dirs["mura_dir"], dirs["fracture_dir"], image_size=16),
            IngestParams(workers=1),
            tmp_path / "p.npy",
            progress=False,
        )


def test_both_empty_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    data = DataParams(mura_dir=str(tmp_path / "a"), fracture_dir=str(tmp_path / "b"))
    with pytest.raises(DataError, match="no image listed"):
        ingest(data, IngestParams(), tmp_path / "p.npy", progress=False)


def test_quarantine_threshold(synthetic_raw: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(synthetic_raw / "MURA-v1.1", raw / "MURA-v1.1")
    (raw / "Bone_Fracture_Binary_Classification").mkdir()  # the fracture dataset left out
    listed = pd.read_csv(raw / "MURA-v1.1/train_image_paths.csv", header=None)[0].tolist()
    for rel in listed[: len(listed) // 4]:
        (tmp_path / "raw" / rel).unlink(missing_ok=True)
    result = ingest(_data(raw, 16), IngestParams(workers=1), tmp_path / "p.npy", progress=False)
    with pytest.raises(DataError, match="max_quarantine_fraction"):
        check_quarantine(result.summary, 0.05)
    check_quarantine(result.summary, 0.5)
