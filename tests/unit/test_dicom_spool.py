"""The node's spool: acknowledged instances survive, answered ones are not answered twice, names identify nobody."""

from __future__ import annotations

from pathlib import Path

import pytest

from mura.integrations.dicom_delivery import CStoreDestination, parse_destination
from mura.integrations.dicom_spool import Spool


def test_receive_keeps_instances_under_keyed_names(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    study, new = spool.receive("1.2.3.4", "1.2.3.4.1", b"one")
    assert new and spool.waiting() == [study]
    assert "1.2.3" not in "".join(str(p) for p in tmp_path.rglob("*"))
    assert spool.receive("1.2.3.4", "1.2.3.4.1", b"one") == (study, False)  # held already
    assert Spool(tmp_path).key("1.2.3.4") == study  # the key survives a restart
    assert Spool(tmp_path / "other").key("1.2.3.4") != study  # and means nothing elsewhere


def test_an_answered_study_sent_again_is_not_answered_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    study, _ = spool.receive("9.9", "9.9.1", b"a")
    spool.receive("9.9", "9.9.2", b"b")
    name = spool.result_name(study, "1")
    spool.store_result(name, [("sr.dcm", b"sr")], destinations=2)
    spool.finish(study, spool.instances(study))
    assert spool.waiting() == [] and spool.has_result(name)
    assert spool.receive("9.9", "9.9.1", b"a") == (study, False)
    _, late = spool.receive("9.9", "9.9.3", b"c")
    assert late  # a new instance of the study is new


def test_result_set_name_depends_on_instances_and_model(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    study, _ = spool.receive("5.5", "5.5.1", b"a")
    first = spool.result_name(study, "1")
    assert first == spool.result_name(study, "1") != spool.result_name(study, "2")
    spool.receive("5.5", "5.5.2", b"b")
    assert spool.result_name(study, "1") != first


def test_delivery_markers_per_destination(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.store_result("r1", [("sr.dcm", b"sr"), ("sc-001.dcm", b"sc")], destinations=2)
    (pending,) = spool.undelivered()
    assert pending.pending == (0, 1) and [p.name for p in pending.files] == ["sc-001.dcm", "sr.dcm"]
    spool.delivered(pending, 0)
    (pending,) = spool.undelivered()
    assert pending.pending == (1,)
    spool.delivered(pending, 1)
    assert spool.undelivered() == [] and not (tmp_path / "outgoing" / "r1").exists()


def test_a_half_written_result_is_dropped_at_restart(tmp_path: Path) -> None:
    Spool(tmp_path)
    (tmp_path / "outgoing" / ".r2").mkdir()
    (tmp_path / "incoming" / "s").mkdir()
    (tmp_path / "incoming" / "s" / ".x.dcm.tmp").write_bytes(b"half")
    Spool(tmp_path)
    assert not (tmp_path / "outgoing" / ".r2").exists() and not list((tmp_path / "incoming").rglob("*.tmp"))


def test_parse_destination() -> None:
    assert parse_destination("PACS@10.0.0.5:104", "MURA") == CStoreDestination("PACS", "10.0.0.5", 104, "MURA")
    for bad in ("PACS@host", "host:104", "A_TITLE_LONGER_THAN_16@h:1", "PACS@h:99999"):
        with pytest.raises(ValueError, match="AE@host:port"):
            parse_destination(bad)
