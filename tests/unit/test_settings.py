"""The ``MURA_*`` runtime settings: one name, type and default each, a bad value one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mura.errors import ConfigError
from mura.settings import RuntimeSettings, runtime_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in RuntimeSettings.model_fields:
        monkeypatch.delenv(f"MURA_{name.upper()}", raising=False)


def test_defaults() -> None:
    settings = runtime_settings()
    assert settings.audit_dir is None and settings.server_audit_dir == Path.home() / ".local/state/mura/audit"
    assert settings.log_format == "text" and settings.log_level == "INFO" and settings.offline is False
    assert settings.precision is None and settings.runtime is None and settings.ov_cache_max_mb == 4096


def test_every_variable_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    values = {
        "MURA_AUDIT_DIR": str(tmp_path),
        "MURA_LOG_FORMAT": "json",
        "MURA_LOG_LEVEL": "debug",  # any case
        "MURA_OFFLINE": "1",
        "MURA_OV_CACHE": "off",
        "MURA_OV_CACHE_MAX_MB": "1.5",
        "MURA_PRECISION": "bf16",
        "MURA_RUNTIME": "keras",
        "MURA_UI_TOKEN": "t0ken",
        "MURA_FEEDBACK_DB": "postgresql://u:p@db/feedback",
        "MURA_STOW_AUTH": "u:p",
        "MURA_GIT_COMMIT": "abc",
        "MURA_PIPELINE_RUN_ID": "kfp-1",
    }
    assert {f"MURA_{name.upper()}" for name in RuntimeSettings.model_fields} == set(values)  # every one covered
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    s = runtime_settings()
    assert (s.audit_dir, s.server_audit_dir) == (tmp_path, tmp_path)
    assert s.feedback_db == "postgresql://u:p@db/feedback"
    assert (s.log_format, s.log_level, s.offline, s.ov_cache, s.ov_cache_max_mb) == ("json", "DEBUG", True, "off", 1.5)
    assert (s.precision, s.runtime, s.ui_token, s.stow_auth, s.git_commit, s.pipeline_run_id) == (
        "bf16", "keras", "t0ken", "u:p", "abc", "kfp-1",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MURA_PRECISION", "fp16", "MURA_PRECISION='fp16': Input should be 'f32', 'bf16' or 'int8'"),
        ("MURA_RUNTIME", "gpu", "MURA_RUNTIME='gpu'"),
        ("MURA_OV_CACHE_MAX_MB", "-1", "MURA_OV_CACHE_MAX_MB='-1'"),
        ("MURA_LOG_FORMAT", "xml", "MURA_LOG_FORMAT='xml'"),
        ("MURA_OFFLINE", "maybe", "MURA_OFFLINE='maybe'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as failure:
        runtime_settings()
    assert str(failure.value).startswith(expected) and "\n" not in str(failure.value)


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MURA_PRECISION", "")
    monkeypatch.setenv("MURA_AUDIT_DIR", "")
    assert runtime_settings().precision is None and runtime_settings().audit_dir is None


def test_the_docs_table_lists_every_variable() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs"))
    try:
        from hooks import settings_reference
    finally:
        sys.path.pop(0)
    table = settings_reference()
    for name, field in RuntimeSettings.model_fields.items():
        assert f"`MURA_{name.upper()}`" in table and field.description
