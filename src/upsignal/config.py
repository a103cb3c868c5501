"""The project file (``upsignal.yaml``) and the environment, read in one place.

Secrets never appear in the project file: it names environment variables,
and ``secret()`` reads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

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
    full_scoring_interval_seconds: float = Field(
        default=3600.0, gt=0,
        description="Live scoring also re-scores every account this often, so windows of idle accounts move on",
    )
    duckdb_threads: int | None = Field(
        default=None, ge=1, le=512, strict=True,
        description="DuckDB threads while serving [default: one fewer than the CPUs, so that one is left for"
        " acknowledging requests]",
    )
    ingest_backlog_mb: int = Field(
        default=4096, ge=1, le=1024 * 1024, strict=True,
        description="Acknowledged request bodies the ingest log may hold before they are loaded into the store;"
        " beyond it requests get 503 with Retry-After",
    )


class SparkSettings(_Section):
    """Where ``--engine spark`` runs and which events it reads."""

    master: str | None = Field(
        default=None,
        min_length=1,
        description="Spark master URL such as local[4], spark://host:7077 or yarn"
        " [default: spark-submit's --master, else local[2]]",
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


DESTINATION_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
BUILTIN_DESTINATION_TYPES = ("hubspot", "salesforce", "slack", "webhook")


class RateLimitSettings(_Section):
    """At most ``requests`` requests in any ``seconds`` seconds, with bursts up to ``requests``."""

    requests: int = Field(gt=0)
    seconds: float = Field(gt=0)


class _DestinationSettings(_Section):
    name: str = Field(pattern=DESTINATION_NAME_PATTERN, description="Name used in the outbox and the CLI")
    enabled: bool = Field(default=True, description="A disabled destination gets no new alerts")
    tiers: list[str] | None = Field(
        default=None, description="Tiers whose transitions this destination receives [default: the model's pql_tier]"
    )
    events: list[Literal["entered", "left"]] = Field(
        default_factory=lambda: ["entered"], min_length=1, description="Entering a tier, leaving it, or both"
    )
    batch_size: int | None = Field(
        default=None, gt=0, description="Alerts per delivery call [default and maximum: the destination's own]"
    )
    rate_limit: RateLimitSettings | None = Field(
        default=None, description="Request limit [default: the vendor's documented limit]"
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of each HTTP request")


class HubSpotSettings(_DestinationSettings):
    type: Literal["hubspot"]
    token_env: str = Field(default="HUBSPOT_TOKEN", description="Variable holding the private app access token")
    api_url: str = "https://api.hubapi.com"
    engagement: Literal["note", "task"] = Field(default="note", description="What to create on the company")
    property_prefix: str = Field(
        default="upsignal_", pattern=r"^[a-z][a-z0-9_]*$", description="Prefix of the properties upsignal creates"
    )
    match_existing_by_domain: bool = Field(
        default=True, description="Search for an existing company with the account's domain before creating one"
    )
    timezone: str = Field(default="UTC", description="The HubSpot account's time zone, in which the daily limit resets")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as America/New_York") from None
        return value


class SalesforceSettings(_DestinationSettings):
    type: Literal["salesforce"]
    auth: Literal["client_credentials", "jwt_bearer", "password"] = "client_credentials"
    login_url: str = Field(default="https://login.salesforce.com", description="OAuth host, or your My Domain URL")
    api_version: str = Field(default="62.0", pattern=r"^\d+\.\d$")
    client_id_env: str = "SALESFORCE_CLIENT_ID"
    client_secret_env: str = "SALESFORCE_CLIENT_SECRET"
    username_env: str = Field(default="SALESFORCE_USERNAME", description="jwt_bearer and password flows")
    password_env: str = Field(default="SALESFORCE_PASSWORD", description="password flow: password and security token")
    private_key_env: str = Field(default="SALESFORCE_PRIVATE_KEY", description="jwt_bearer flow: PEM private key")
    account_key_field: str = Field(default="Upsignal_Domain__c", description="Account External ID field to upsert by")
    account_key: Literal["domain", "account_id"] = Field(default="domain", description="Value stored in that field")
    task_key_field: str = Field(
        default="Upsignal_Alert_Key__c", description="Task External ID field that holds the alert key"
    )
    score_field: str | None = "Upsignal_Score__c"
    tier_field: str | None = "Upsignal_Tier__c"
    reasons_field: str | None = "Upsignal_Reasons__c"
    pql_date_field: str | None = "Upsignal_PQL_Date__c"
    task_priority: str = "High"


class SlackSettings(_DestinationSettings):
    type: Literal["slack"]
    webhook_url_env: str = Field(
        default="SLACK_WEBHOOK_URL", description="Variable holding the incoming webhook URL, which is a secret"
    )


class WebhookSettings(_DestinationSettings):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://", description="Receiver URL; each alert is one POST")
    secret_env: str = Field(default="UPSIGNAL_WEBHOOK_SECRET", description="Variable holding the HMAC-SHA256 key")


class CustomDestinationSettings(_DestinationSettings):
    """A destination from another package: an entry point name or ``module:Class``."""

    type: str = Field(pattern=r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")
    options: dict[str, Any] = Field(default_factory=dict, description="Settings the destination class validates")


def _destination_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in BUILTIN_DESTINATION_TYPES else "custom"


DestinationSettings = Annotated[
    Annotated[HubSpotSettings, Tag("hubspot")]
    | Annotated[SalesforceSettings, Tag("salesforce")]
    | Annotated[SlackSettings, Tag("slack")]
    | Annotated[WebhookSettings, Tag("webhook")]
    | Annotated[CustomDestinationSettings, Tag("custom")],
    Discriminator(_destination_tag),
]


class AlertSettings(_Section):
    """The destinations of tier transitions, and the usage context each alert carries."""

    base_url: str | None = Field(
        default=None,
        description="Base URL of the upsignal server for account links [default: http://server.host:server.port]",
    )
    personal_data: bool = Field(
        default=False, description="Name the most active users by name and email in alerts"
    )
    top_reasons: int = Field(default=3, ge=1, le=10, description="Signals described in each alert")
    top_users: int = Field(default=3, ge=0, le=10, description="Most active users listed when personal_data is on")
    active_users_window: str = Field(default="7d", description="Window over which users count as active")
    max_attempts: int = Field(default=10, ge=1, description="Retryable failures before an alert is dead-lettered")
    backoff_seconds: float = Field(default=30.0, gt=0, description="First retry delay; it doubles per failure")
    max_backoff_seconds: float = Field(default=3600.0, gt=0)
    destinations: list[DestinationSettings] = Field(default_factory=list)

    @field_validator("active_users_window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        from upsignal.signals.model import parse_window

        if parse_window(value) is None:
            raise ValueError("active_users_window must be a rolling window such as 7d or 24h, not 'week'")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> AlertSettings:
        names = [destination.name for destination in self.destinations]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"destination names must be unique; repeated: {', '.join(repeated)}")
        return self


class ProjectConfig(_Section):
    """Everything in upsignal.yaml; every section and field is optional."""

    db: str | None = Field(default=None, description="Store path (UPSIGNAL_DB and --db take precedence)")
    model: str | None = Field(default=None, description="Model YAML path")
    server: ServerSettings = Field(default_factory=ServerSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    def alert_base_url(self) -> str:
        """Return the base URL of account links in alerts: alerts.base_url, else the server's address."""
        return (self.alerts.base_url or f"http://{self.server.host}:{self.server.port}").rstrip("/")


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
