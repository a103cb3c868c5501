"""Write one benchmark's section of BENCHMARKS.md, leaving the other sections as they are."""

from __future__ import annotations

import platform
import re
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS_FILE = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nMeasured figures, each section written by the script named in its heading.\n"


def machine_line() -> str:
    import os

    return (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()},"
        f" {os.cpu_count()} CPUs, Python {platform.python_version()}."
    )


def write_section(heading: str, body: str, path: Path = BENCHMARKS_FILE) -> None:
    """Replace the section that starts with ``## {heading}`` (or append it)."""
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text, encoding="utf-8")
