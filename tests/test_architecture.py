"""The floors of the house (README, "Layout") are checked, not hoped for.

``lint-imports`` reads the contracts in pyproject.toml; a back-import added to a
copy of the tree must break them, so the check is known to bite.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contracts", "service", "learners", "simulation", "benchmarks", "evaluations",
            "commands")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: the tree at ``root``, not the editable install, is analysed.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root,
        env={"PYTHONPATH": str(root), "COLUMNS": "300"},  # wide: one line per contract
        capture_output=True, text=True, timeout=120,
    )


def test_the_floors_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "back_import", "broken"), [
    # the contracts import no package of the project
    ("contracts/keys.py", "import service.feedback_store", "Floors"),
    # serving and learning stand side by side: neither imports the other
    ("learners/worker.py", "import service.engine", "Floors"),
    # production code never imports what drives it
    ("service/api.py", "import benchmarks.serve", "Floors"),
    ("learners/ppo.py", "import simulation.users", "Floors"),
    # the contracts load in any process: no Ray, no web framework
    ("contracts/settings.py", "import ray", "import no Ray"),
    ("learners/rollout.py", "import fastapi", "no web framework"),
])
def test_a_back_import_breaks_the_floors(tmp_path, module, back_import, broken):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "default_model"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert lint_imports(tmp_path).returncode == 0  # the copy holds before the change
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{back_import}  # the back-import under test\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    broken_lines = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken_lines) == 1 and broken in broken_lines[0], result.stdout
