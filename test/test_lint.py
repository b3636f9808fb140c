"""The house's linters as tests: ruff (ruff.toml) over the repository, mypy (mypy.ini) over the package.

Both run from the venv scripts/setup.sh builds (pinned in scripts/requirements.txt), so CI fails
on a lint or type error the same way it fails on a broken test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        __import__(module)
    except ImportError:
        pytest.fail(f"{module} is not installed: run scripts/setup.sh (it installs the pinned linters)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900)


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = _run("mypy", "--config-file", "mypy.ini", "--cache-dir", "/dev/null")
    assert result.returncode == 0, result.stdout + result.stderr
