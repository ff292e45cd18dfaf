"""The pipeline's import structure (pyproject.toml's import-linter contracts): layers top-down, no cycles, and
no fitting code in the server. Checked on the real package, and shown to catch a violation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[test]')")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(root / "src"), "PATH": str(LINT.parent)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _copy(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "src" / "wildtrack", tmp_path / "src" / "wildtrack",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_package_keeps_its_import_contracts():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_cycle_between_two_modules_breaks_the_contract(tmp_path):
    root = _copy(tmp_path)
    model = root / "src" / "wildtrack" / "model"
    _append(model / "backbones.py", "import wildtrack.model.mobilenetv2_torch  # noqa: E402")
    _append(model / "mobilenetv2_torch.py", "import wildtrack.model.backbones  # noqa: E402")
    result = _lint(root)
    assert result.returncode != 0
    assert "no import cycles between sibling modules BROKEN" in " ".join(result.stdout.split())


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path):
    root = _copy(tmp_path)
    _append(root / "src" / "wildtrack" / "decide" / "identity.py", "import wildtrack.search  # noqa: E402")
    result = _lint(root)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "wildtrack.decide.identity -> wildtrack.search" in result.stdout


def _doc_modules() -> list[str]:
    """Every module or folder docs/architecture.md names, as written (``serve/app.py``, ``app.py``, ``cli/``)."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return [a or b for a, b in re.findall(r"`([\w./]+\.py)(?::[^`]*)?`|`([\w/]+/)`", text)]


def _exists(path: str) -> bool:
    """A repository path as written, a path under the package, or (a bare name) a module somewhere in it."""
    package = ROOT / "src" / "wildtrack"
    if (ROOT / path).exists() or (package / path).exists():
        return True
    return any(p.relative_to(package).as_posix().endswith("/" + path.rstrip("/")) for p in package.rglob("*"))


def test_every_module_the_architecture_names_exists():
    named = _doc_modules()
    assert len(named) > 60
    missing = [path for path in named if not _exists(path)]
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
    assert not _exists("matching/rerank.py")  # ... and the check can fail


def test_every_function_the_walkthrough_names_is_defined_where_it_says():
    import re

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for path, name in re.findall(r"`([\w/]+\.py): ([\w.]+)`", text):
        source = (ROOT / "src" / "wildtrack" / path).read_text(encoding="utf-8")
        assert re.search(rf"(def|class) {name.split('.')[-1]}\b", source), f"{path} defines no {name}"


def test_the_server_loads_neither_the_fitting_code_nor_the_metrics():
    code = ("import sys, wildtrack.serve.app; "
            "print(sorted(m for m in ('wildtrack.evaluate', 'wildtrack.matching.fit', 'sklearn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT / "src")}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
