"""The scoring model: signals, rules, fit rules and tiers, read from versioned YAML.

The model's version is a hash of its normalised content, so two files that
differ only in comments or key order have the same version.
"""

from __future__ import annotations

import hashlib
import re
import string
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from upsignal.errors import ModelError

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
PROPERTY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
WINDOW_PATTERN = re.compile(r"^(\d+)([hdw])$")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


SENTENCE_PLACEHOLDERS = ("value", "previous", "window", "label")


def check_sentence(template: str | None) -> str | None:
    """Reject a sentence template with a placeholder that sentences cannot fill.

    >>> check_sentence("ran {value} reports {window}")
    'ran {value} reports {window}'
    """
    if template is None:
        return None
    allowed = ", ".join("{" + name + "}" for name in SENTENCE_PLACEHOLDERS)
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"sentence {template!r} has unbalanced braces ({error}); write {{{{ for a literal brace") from None
    for _, field_name, format_spec, conversion in parts:
        if field_name is None:
            continue
        if field_name not in SENTENCE_PLACEHOLDERS:
            raise ValueError(f"sentence {template!r} uses {{{field_name}}}; the placeholders are {allowed}")
        if format_spec or conversion:
            raise ValueError(
                f"sentence {template!r} formats {{{field_name}}}; values are already formatted, so write {{{field_name}}}"
            )
    return template


def parse_window(text: str) -> timedelta | None:
    """Return a rolling window's length, or None for the calendar ``week``.

    >>> parse_window("7d")
    datetime.timedelta(days=7)
    >>> parse_window("week") is None
    True
    """
    if text == "week":
        return None
    match = WINDOW_PATTERN.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"window {text!r} must be 'week' or a length such as 24h, 7d or 4w")
    amount, unit = int(match.group(1)), match.group(2)
    return {"h": timedelta(hours=amount), "d": timedelta(days=amount), "w": timedelta(weeks=amount)}[unit]


class Condition(_Strict):
    """A filter on an event property; exactly one comparison is set."""

    property: str
    equals: str | float | bool | None = None
    not_equals: str | float | bool | None = None
    in_: list[str | float] | None = Field(default=None, alias="in")
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @field_validator("property")
    @classmethod
    def _check_property(cls, value: str) -> str:
        if not PROPERTY_PATTERN.match(value):
            raise ValueError(
                f"property {value!r} must be letters, digits and underscores, dotted for nesting"
            )
        return value

    @model_validator(mode="after")
    def _one_comparison(self) -> Condition:
        set_fields = [
            name for name in ("equals", "not_equals", "in_", "gt", "gte", "lt", "lte")
            if getattr(self, name) is not None
        ]
        if len(set_fields) != 1:
            raise ValueError("set exactly one of equals, not_equals, in, gt, gte, lt, lte")
        return self


class _SignalBase(_Strict):
    description: str = ""
    sentence: str | None = Field(
        default=None,
        description="Sales-facing sentence with {value}, {previous}, {window}, e.g. 'ran {value} reports {window}'",
    )
    window: str = "7d"
    compare_previous: bool = Field(
        default=False, description="Also compute the value over the previous window, for sentences and trends"
    )

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        parse_window(value)
        return value

    _check_sentence = field_validator("sentence")(lambda cls, value: check_sentence(value))


class EventFilter(_SignalBase):
    event: str | list[str] | None = Field(default=None, description="Track event name(s); omit for all events")
    where: list[Condition] = Field(default_factory=list)

    @property
    def events(self) -> list[str]:
        if self.event is None:
            return []
        return [self.event] if isinstance(self.event, str) else list(self.event)


class CountSignal(EventFilter):
    type: Literal["count"]


class DistinctUsersSignal(EventFilter):
    type: Literal["distinct_users"]


class PropertySignal(EventFilter):
    type: Literal["sum", "max", "last", "distinct"]
    property: str

    _check_property = field_validator("property")(Condition._check_property.__func__)


class RatioSignal(_Strict):
    """``numerator / denominator``; the denominator is another signal or a constant (a plan limit)."""

    type: Literal["ratio"]
    numerator: str
    denominator: str | float
    description: str = ""
    sentence: str | None = None
    percent: bool = Field(default=False, description="Multiply by 100, for 'at 92% of the limit'")

    _check_sentence = field_validator("sentence")(lambda cls, value: check_sentence(value))

    @field_validator("denominator")
    @classmethod
    def _nonzero_denominator(cls, value: str | float) -> str | float:
        if not isinstance(value, str) and value == 0:
            raise ValueError("a constant denominator must not be 0")
        return value


class TrendSignal(_Strict):
    """A signal's value in its window divided by its value in the previous window of the same length."""

    type: Literal["trend"]
    of: str
    description: str = ""
    sentence: str | None = None

    _check_sentence = field_validator("sentence")(lambda cls, value: check_sentence(value))


Signal = Annotated[
    CountSignal | DistinctUsersSignal | PropertySignal | RatioSignal | TrendSignal,
    Field(discriminator="type"),
]
AGGREGATE_TYPES = (CountSignal, DistinctUsersSignal, PropertySignal)


class Step(_Strict):
    at: float
    points: float


class Rule(_Strict):
    """Points for a signal at or above each step's threshold; the highest step reached counts."""

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    signal: str
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _sorted_steps(self) -> Rule:
        thresholds = [step.at for step in self.steps]
        if thresholds != sorted(set(thresholds)):
            raise ValueError("steps must have distinct 'at' thresholds in increasing order")
        if self.name is None:
            self.name = self.signal
        return self


class FitRule(_Strict):
    """Points for an account trait from its group calls (plan, seats, industry, ...)."""

    name: str = Field(pattern=NAME_PATTERN)
    trait: str
    equals: str | float | bool | None = None
    in_: list[str | float] | None = Field(default=None, alias="in")
    at_least: float | None = None
    points: float

    @model_validator(mode="after")
    def _one_comparison(self) -> FitRule:
        if sum(value is not None for value in (self.equals, self.in_, self.at_least)) != 1:
            raise ValueError("set exactly one of equals, in, at_least")
        if not PROPERTY_PATTERN.match(self.trait):
            raise ValueError(f"trait {self.trait!r} must be letters, digits and underscores")
        return self


class Tier(_Strict):
    """A score band. An account enters at ``min`` and leaves only below ``exit_below``."""

    name: str = Field(pattern=NAME_PATTERN)
    min: float
    exit_below: float | None = None

    @model_validator(mode="after")
    def _exit_not_above_entry(self) -> Tier:
        if self.exit_below is None:
            self.exit_below = self.min
        if self.exit_below > self.min:
            raise ValueError(f"tier {self.name}: exit_below ({self.exit_below}) is above min ({self.min})")
        return self


class ScoringModel(_Strict):
    """The whole model file."""

    name: str
    description: str = ""
    timezone: str = "UTC"
    week_start: Literal[WEEKDAYS] = "monday"  # type: ignore[valid-type]
    signals: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Signal]
    rules: list[Rule] = Field(default_factory=list)
    fit: list[FitRule] = Field(default_factory=list)
    max_score: float = Field(default=100, gt=0)
    tiers: list[Tier] = Field(min_length=1)
    pql_tier: str = "pql"
    cooldown: str = Field(default="7d", description="After leaving a tier, re-entering it within this time raises no new alert")

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Kolkata") from None
        return value

    @model_validator(mode="after")
    def _check_references(self) -> ScoringModel:
        names = set(self.signals)
        for name, signal in self.signals.items():
            references = []
            if isinstance(signal, RatioSignal):
                references = [signal.numerator]
                if isinstance(signal.denominator, str):
                    references.append(signal.denominator)
            elif isinstance(signal, TrendSignal):
                references = [signal.of]
            for reference in references:
                if reference not in names or not isinstance(self.signals[reference], AGGREGATE_TYPES):
                    raise ValueError(
                        f"signals.{name}: refers to {reference!r}, which is not a count, distinct_users,"
                        " distinct, sum, max or last signal of this model"
                    )

        for index, rule in enumerate(self.rules):
            if rule.signal not in names:
                raise ValueError(f"rules.{index} ({rule.name}): refers to unknown signal {rule.signal!r}")
        rule_names = [rule.name for rule in self.rules] + [rule.name for rule in self.fit]
        repeated = sorted({name for name in rule_names if rule_names.count(name) > 1})
        if repeated:
            raise ValueError(f"rules: {', '.join(repeated)} used twice; give repeated rules and fit rules a unique 'name'")

        tier_names = [tier.name for tier in self.tiers]
        if len(tier_names) != len(set(tier_names)):
            raise ValueError(f"tiers: names must be unique, got {tier_names}")
        mins = [tier.min for tier in self.tiers]
        if mins != sorted(set(mins)):
            raise ValueError("tiers: list them from lowest to highest min, with distinct mins")
        unreachable = [tier.name for tier in self.tiers if tier.min > self.max_score]
        if unreachable:
            raise ValueError(f"tiers: {', '.join(unreachable)} can never be reached, min is above max_score {self.max_score:g}")
        if self.pql_tier not in tier_names:
            raise ValueError(f"pql_tier: {self.pql_tier!r} is not one of the tiers {tier_names}")

        try:
            parse_window(self.cooldown)
        except ValueError as error:
            raise ValueError(f"cooldown: {error}") from None
        return self

    @property
    def version(self) -> str:
        """A content hash of the normalised model (12 hex digits)."""
        canonical = orjson.dumps(self.model_dump(mode="json", by_alias=True), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:12]

    def needs_previous(self, name: str) -> bool:
        """Return whether the previous-window value of an aggregate signal is computed."""
        signal = self.signals[name]
        if not isinstance(signal, AGGREGATE_TYPES):
            return False
        return signal.compare_previous or any(
            isinstance(other, TrendSignal) and other.of == name for other in self.signals.values()
        )


def _describe(error: pydantic.ValidationError, source: str) -> ModelError:
    lines = []
    for item in error.errors(include_url=False)[:5]:
        location = [str(part) for part in item["loc"]]
        if location[:1] == ["signals"] and len(location) > 2:
            del location[2]  # the signal type, which pydantic adds for the tagged union
        where = ".".join(location)
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return ModelError(f"invalid model {source}:\n" + "\n".join(lines))


def parse_model(text: str, source: str = "<string>") -> ScoringModel:
    """Parse model YAML text, raising ModelError that names the path of each problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ModelError(f"model {source} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ModelError(f"model {source} must be a YAML mapping with name, signals, rules and tiers")
    try:
        return ScoringModel.model_validate(data)
    except pydantic.ValidationError as error:
        raise _describe(error, source) from None


DEFAULT_MODEL_FILE = "upsignal.model.yaml"


def default_model_text() -> str:
    return resources.files("upsignal.data").joinpath("default_model.yaml").read_text(encoding="utf-8")


def load_model(path: str | Path | None = None) -> tuple[ScoringModel, str]:
    """Load a model file (or ./upsignal.model.yaml, or the shipped default); return it and its YAML."""
    if path is None:
        path = Path(DEFAULT_MODEL_FILE)
        if not path.exists():
            text = default_model_text()
            return parse_model(text, "(shipped default model)"), text
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}; run 'upsignal init' to write the default") from None
    return parse_model(text, str(path)), text


def model_json_schema() -> dict[str, Any]:
    return ScoringModel.model_json_schema(by_alias=True)
