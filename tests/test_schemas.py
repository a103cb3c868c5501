"""The published JSON Schemas match the pydantic models they come from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from upsignal.config import ProjectConfig
from upsignal.signals.model import model_json_schema

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


@pytest.mark.parametrize(
    ("file_name", "build"),
    [("model.schema.json", model_json_schema), ("project.schema.json", ProjectConfig.model_json_schema)],
)
def test_published_schema_is_current(file_name, build):
    published = json.loads((SCHEMAS / file_name).read_text(encoding="utf-8"))

    assert published == build(), f"regenerate with: upsignal schema {file_name.split('.')[0]} > schemas/{file_name}"
