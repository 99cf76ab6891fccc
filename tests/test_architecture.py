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


# why: lint-imports' own line for the violation. The broken contract's name alone is not
# enough: with "contracts" dropped from the Floors' layers, contracts.keys importing service
# still breaks the Floors, but only through learners -> contracts.keys -> service.
@pytest.mark.parametrize(("module", "back_import", "broken", "why"), [
    # the contracts import no package of the project
    ("contracts/keys.py", "import service.feedback_store", "Floors",
     "contracts is not allowed to import service"),
    # serving and learning stand side by side: neither imports the other
    ("learners/worker.py", "import service.engine", "Floors",
     "learners is not allowed to import service"),
    # production code never imports what drives it
    ("service/api.py", "import benchmarks.serve", "Floors",
     "service is not allowed to import benchmarks"),
    ("learners/ppo.py", "import simulation.users", "Floors",
     "learners is not allowed to import simulation"),
    # the contracts load in any process: no Ray, no web framework
    ("contracts/settings.py", "import ray", "import no Ray",
     "contracts is not allowed to import ray"),
    ("learners/rollout.py", "import fastapi", "no web framework",
     "learners is not allowed to import fastapi"),
    # inside a package the modules form no cycle (contracts.adapter_store imports contracts.keys)
    ("contracts/keys.py", "import contracts.adapter_store", "No import cycles",
     "No cycles are allowed in contracts"),
])
def test_a_back_import_breaks_the_floors(tmp_path, module, back_import, broken, why):
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
    assert why in result.stdout, result.stdout
