"""Column mappings: how a CSV, Parquet or foreign JSON record becomes a Segment message.

A mapping file is YAML::

    fields:                       # Segment path -> source column
      userId: ORGANIZATION_ID
      context.groupId: ORGANIZATION_ID
      event: ACTIVITY_NAME
      timestamp: TIMESTAMP
      properties.converted: {column: CONVERTED, type: boolean}
    constants:                    # Segment path -> fixed value
      type: track

Empty cells are left out of the message, so an optional column may be blank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from upsignal.errors import ImportFileError, InvalidEventError

ValueType = Literal["string", "number", "integer", "boolean", "json"]
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str
    type: ValueType | None = None


class Mapping(BaseModel):
    """A source-to-Segment mapping; see the module docstring for the YAML shape."""

    model_config = ConfigDict(extra="forbid")

    fields: dict[str, str | ColumnSpec] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        """Build a Segment-shaped record from one source row."""
        record: dict[str, Any] = {}
        for path, value in self.constants.items():
            _set_path(record, path, value)
        for path, spec in self.fields.items():
            column, value_type = (spec, None) if isinstance(spec, str) else (spec.column, spec.type)
            value = row.get(column)
            if value is None or value == "":
                continue
            _set_path(record, path, _convert(value, value_type, column))
        return record


def _set_path(record: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        record = record.setdefault(part, {})
    record[leaf] = value


def _convert(value: Any, value_type: ValueType | None, column: str) -> Any:
    if value_type is None or not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if value_type == "number":
            return float(text)
        if value_type == "integer":
            return int(float(text))
        if value_type == "boolean":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(text)
    except ValueError:
        raise InvalidEventError(
            f"column '{column}': {value!r} is not a valid {value_type}", field=column, value=value
        ) from None
    return value


def load_mapping(path: str | Path) -> Mapping:
    """Read and validate a mapping YAML file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportFileError(f"mapping file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ImportFileError(f"mapping file {path} is not valid YAML: {error}") from None
    try:
        return Mapping.model_validate(data or {})
    except pydantic.ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ImportFileError(f"mapping file {path}: '{where}': {first['msg']}") from None
