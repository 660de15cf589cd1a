"""Runtime settings: the ``MURA_*`` environment variables, read and validated in one place.

``params.yaml`` configures the pipeline; these configure a running process (a server, the
CLI, a stage's logging) on the machine it runs on. Each is read through :func:`runtime_settings`
(pydantic-settings), so a variable has one name, one type and one default everywhere, and a bad
value is one line naming the variable. The table in docs/configuration.md is generated from
:class:`RuntimeSettings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mura.errors import ConfigError

__all__ = ["ENV_PREFIX", "RuntimeSettings", "runtime_settings"]

ENV_PREFIX = "MURA_"


class RuntimeSettings(BaseSettings):
    """What ``MURA_<NAME>`` sets (each field's description is its documentation)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore", case_sensitive=False)

    audit_dir: Path | None = Field(
        default=None,
        description="the audit trail's folder: the servers' and `mura monitor`'s (default `~/.local/state/mura/audit`); "
        "`mura predict` records its answers there only when it is set",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="log lines as text, or one JSON object per line with the request id (servers, the `mura` command)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="the lowest level logged"
    )
    offline: bool = Field(
        default=False,
        description="never download ImageNet weights (`train.pretrained: imagenet` then needs them in Keras's cache)",
    )
    ov_cache: str | None = Field(
        default=None, description="OpenVINO's compiled-model cache folder (default `~/.cache/mura/openvino`); `off` turns it off"
    )
    ov_cache_max_mb: float = Field(
        default=4096.0, ge=0, description="the compiled-model cache's size limit; least recently used entries are dropped"
    )
    precision: Literal["f32", "bf16", "int8"] | None = Field(
        default=None, description="the numeric precision served, forced (default: the fastest the registered check allowed)"
    )
    runtime: Literal["auto", "optimized", "keras"] | None = Field(
        default=None, description="the runtime served, overriding `register.runtime`"
    )
    ui_token: str | None = Field(default=None, description="the web page's bearer token (`mura serve-ui --token` overrides)")
    feedback_db: str | None = Field(
        default=None,
        description="the feedback store's database URL (e.g. `postgresql://…` in the team stack; default SQLite in "
        "`--feedback-dir`): a secret, so an environment variable rather than a command-line flag",
    )
    stow_auth: str | None = Field(
        default=None, description="`user:password` for a STOW-RS server behind basic auth (the DICOM node's delivery)"
    )
    git_commit: str | None = Field(
        default=None, description="the commit a run is tagged with when the workspace is not a git checkout (`make demo` sets it)"
    )
    pipeline_run_id: str | None = Field(
        default=None, description="groups the stages of one pipeline run in MLflow (the Kubeflow pipeline sets it to its run id)"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def server_audit_dir(self) -> Path:
        """The servers' audit folder: ``MURA_AUDIT_DIR``, else ``~/.local/state/mura/audit``."""
        return self.audit_dir or Path.home() / ".local/state/mura/audit"

    @field_validator(
        "audit_dir",
        "precision",
        "runtime",
        "ov_cache",
        "ui_token",
        "feedback_db",
        "stow_auth",
        "git_commit",
        "pipeline_run_id",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value


def runtime_settings() -> RuntimeSettings:
    """The ``MURA_*`` settings as the environment gives them now.

    Raises:
        ConfigError: a variable with a bad value (one line naming it and what it accepts).
    """
    try:
        return RuntimeSettings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = f"{ENV_PREFIX}{str(error['loc'][0]).upper()}" if error.get("loc") else ENV_PREFIX + "*"
        raise ConfigError(f"{name}={error.get('input')!r}: {error['msg']}") from None
