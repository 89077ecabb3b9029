import ast
import subprocess
import sys
from pathlib import Path

import worker

# vrae_model.data: reading long CSVs (numpy and csv only) for `vrae-worker tune-levels`;
# vrae_model.calibration (numpy only): the artifact's per-feature calibration, read by worker.detection.calibration.
ALLOWED_FROM_VRAE_MODEL = {"vrae_model.artifact", "vrae_model.windowing", "vrae_model.exceptions", "vrae_model.data",
                           "vrae_model.calibration"}
FORBIDDEN_PACKAGES = {"lightning", "pytorch_lightning", "sklearn", "matplotlib"}


def imported_modules(path: Path, *, top_level_only: bool = False) -> set[str]:
    modules = set()
    tree = ast.parse(path.read_text())
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_worker_imports_only_the_torch_and_numpy_parts_of_vrae_model() -> None:
    """The dependency rule of docs/ARCHITECTURE.md: the worker needs torch and numpy, never training code.
    The offline tools (worker/tools) may draw with matplotlib, imported only when a plot is asked for."""
    root = Path(worker.__file__).parent
    for path in root.rglob("*.py"):
        modules = imported_modules(path)
        assert {m for m in modules if m.startswith("vrae_model")} <= ALLOWED_FROM_VRAE_MODEL, path.name
        forbidden = FORBIDDEN_PACKAGES - ({"matplotlib"} if path.parent.name == "tools" else set())
        assert not {m for m in modules if m.split(".")[0] in forbidden}, path.name
        top_level = imported_modules(path, top_level_only=True)
        assert not {m for m in top_level if m.split(".")[0] in FORBIDDEN_PACKAGES}, path.name


def test_health_check_command_does_not_load_torch() -> None:
    """`vrae-worker check` runs every few seconds as a container healthcheck: it must stay light."""
    probe = "import sys, worker.__main__; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
