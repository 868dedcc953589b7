"""The package builds, imports its native module and opens its command line."""
from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

import tolerance
from tolerance.cli import main


def test_native_module_imports():
    import tolerance._native as native

    assert native.__name__ == "tolerance._native"


def test_version_option():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert tolerance.__version__ in result.output


def test_python_dash_m_opens_the_group():
    out = subprocess.run([sys.executable, "-m", "tolerance", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
