"""The README's first session runs as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def _first_session_commands() -> list[str]:
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A first session", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [command for command in commands if command.startswith("upsignal ")]


def test_first_session_commands_succeed(tmp_path):
    commands = _first_session_commands()
    upsignal = str(Path(sys.executable).with_name("upsignal"))
    (tmp_path / "examples").symlink_to(REPOSITORY / "examples")

    outputs = []
    for command in commands:
        args = shlex.split(command)[1:]
        done = subprocess.run([upsignal, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        outputs.append(done.stdout)

    assert len(commands) == 5
    assert "acct-22" in outputs[3]
    assert "teammates_added" in outputs[4]
