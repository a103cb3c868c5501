"""The project file (``upsignal.yaml``) and the environment, read in one place.

Secrets never appear in the project file: it names environment variables,
and ``secret()`` reads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from upsignal.errors import ConfigError

PROJECT_FILE = "upsignal.yaml"
PROJECT_ENV_VAR = "UPSIGNAL_PROJECT"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    scoring_interval_seconds: float = Field(default=5.0, gt=0, description="Live re-scoring interval")
    future_tolerance_seconds: float = Field(
        default=3600.0, ge=0, description="Timestamps further in the future are clamped to receivedAt"
    )
    admin_token_env: str = Field(default="UPSIGNAL_ADMIN_TOKEN", description="Variable holding the admin API token")


class SparkSettings(_Section):
    """Where ``--engine spark`` runs and which events it reads."""

    master: str = Field(
        default="local[2]", min_length=1, description="Spark master URL: local[N], spark://host:7077, yarn, ..."
    )
    conf: dict[str, str] = Field(
        default_factory=dict,
        description="Spark settings, e.g. spark.executor.memory: 8g (--spark-conf key=value overrides them)",
    )
    events: str | None = Field(
        default=None,
        description="Events for the Spark engine: a Parquet folder or glob, or a table name (--events overrides it)",
    )

    @field_validator("conf", mode="before")
    @classmethod
    def _conf_as_text(cls, value: Any) -> Any:
        """Spark settings are text; YAML numbers and booleans become Spark's spelling (64, true)."""
        if not isinstance(value, dict):
            return value
        text = {}
        for key, item in value.items():
            if isinstance(item, bool):
                item = str(item).lower()
            elif isinstance(item, (int, float)):
                item = str(item)
            text[key] = item
        return text


class ProjectConfig(_Section):
    """Everything in upsignal.yaml; every section and field is optional."""

    db: str | None = Field(default=None, description="Store path (UPSIGNAL_DB and --db take precedence)")
    model: str | None = Field(default=None, description="Model YAML path")
    server: ServerSettings = Field(default_factory=ServerSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)


def load_project(path: str | Path | None = None) -> ProjectConfig:
    """Read the project file: the argument, else $UPSIGNAL_PROJECT, else ./upsignal.yaml if present."""
    explicit = path is not None or PROJECT_ENV_VAR in os.environ
    path = Path(path or os.environ.get(PROJECT_ENV_VAR) or PROJECT_FILE)
    if not path.exists():
        if explicit:
            raise ConfigError(f"project file not found: {path}")
        return ProjectConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return ProjectConfig.model_validate(data)
    except yaml.YAMLError as error:
        raise ConfigError(f"project file {path} is not valid YAML: {error}") from None
    except pydantic.ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"project file {path}: '{where}': {first['msg']}") from None


def secret(variable: str) -> str:
    """Read a secret from the environment; ConfigError naming the variable if it is unset."""
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"environment variable {variable} is not set; it must hold the secret")
    return value
