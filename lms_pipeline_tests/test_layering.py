"""The code's shape as the provider-per-folder issue promised it: imports go down the layers written in
pyproject.toml ([tool.importlinter], checked with import-linter), no module outgrows what one reader holds, no asset
or resource chooses behaviour by a provider's name, and the resources do not host the simulator."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lms_pipeline

PACKAGE = Path(lms_pipeline.__file__).parent
ROOT = PACKAGE.parent
MAX_LINES = 400


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_every_module_is_placed_in_a_layer() -> None:
    """A new top-level module must be given its layer, or the contract says nothing about it."""
    config = (ROOT / "pyproject.toml").read_text()
    placed = set(re.findall(r"lms_pipeline\.(\w+)", config))
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert modules - placed == set(), "modules missing from [tool.importlinter] layers in pyproject.toml"


def test_no_module_is_longer_than_one_reader_holds() -> None:
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}  # fmt: skip
    assert long == {}, f"split these by what they hold (at most {MAX_LINES} lines)"


def test_assets_and_resources_never_branch_on_a_provider_name() -> None:
    """Behaviour per provider lives in providers/<name>/ behind the registry."""
    branch = re.compile(r"provider (==|!=|in)\b|\.provider (==|!=|in)\b")
    files = [*(PACKAGE / "assets").rglob("*.py"), PACKAGE / "resources.py", PACKAGE / "definitions.py"]
    found = [f"{f.name}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
             if branch.search(line)]  # fmt: skip
    assert found == []


def test_resources_import_nothing_from_a_simulator() -> None:
    text = (PACKAGE / "resources.py").read_text()
    assert not re.search(r"^\s*(from|import) lms_pipeline\.(simulator|providers\.\w+\.simulator)", text, re.M)
