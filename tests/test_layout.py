"""The shape of the house: which tier may import which, how big the engine may grow, and that
a backend is found by its file alone."""

import ast
import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import no_emnist_env

import microconv
from microconv import backends

MICROCONV = [sys.executable, "-c", "from microconv.cli import main; main()"]
PACKAGE = Path(microconv.__file__).parent
BACKENDS = Path(backends.__file__).parent

# Lower tiers never import higher ones: the engine knows nothing of letters or the command line,
# and the letters application nothing of the command line.
FORBIDDEN = {
    "engine": ("microconv.letters", "microconv.cli"),
    "backends": ("microconv.letters", "microconv.cli"),
    "letters": ("microconv.cli",),
}

# Code lines (not blank, not only a comment) the engine and each backend may hold. The engine
# is what a reader studies first: it grows only when a lesson needs it, never by accident.
ENGINE_BUDGET = 750
BACKEND_BUDGETS = {"__init__.py": 80, "base.py": 130, "ops_python.py": 220, "ops_numpy.py": 470,
                   "ops_opencl.py": 800, "opencl_devices.py": 200}


def code_lines(path):
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def imported_modules(path):
    """Every module a file imports, absolute names, found without running it."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def all_modules():
    return [info.name for info in pkgutil.walk_packages(microconv.__path__, "microconv.")]


def test_every_module_imports():
    names = all_modules()
    assert {"microconv.engine.tensor", "microconv.letters.training", "microconv.cli.app"} \
        <= set(names)
    for name in names:
        importlib.import_module(name)


@pytest.mark.parametrize("tier", sorted(FORBIDDEN))
def test_lower_tiers_never_import_higher_ones(tier):
    folder = BACKENDS if tier == "backends" else PACKAGE / tier
    offences = []
    for path in sorted(folder.glob("*.py")):
        for module in imported_modules(path):
            if module.startswith(FORBIDDEN[tier]):
                offences.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not offences, "\n".join(offences)


def test_engine_and_backends_stay_within_their_budgets(capsys):
    engine = {path.name: code_lines(path) for path in sorted((PACKAGE / "engine").glob("*.py"))}
    backend_files = {name: code_lines(BACKENDS / name) for name in BACKEND_BUDGETS}
    with capsys.disabled():
        print("\ncode lines: engine " + ", ".join(f"{n} {c}" for n, c in engine.items())
              + f" = {sum(engine.values())} of {ENGINE_BUDGET}; backends "
              + ", ".join(f"{n} {c} of {BACKEND_BUDGETS[n]}" for n, c in backend_files.items()))
    assert sum(engine.values()) <= ENGINE_BUDGET
    over = {n: c for n, c in backend_files.items() if c > BACKEND_BUDGETS[n]}
    assert not over, f"backend files over budget: {over}"


def test_a_backend_file_alone_makes_a_backend_the_cli_can_train_on(tmp_path):
    """A copy of the numpy backend under another name is found, listed and trained on, with no
    other file changed."""
    echo = BACKENDS / "ops_echo.py"
    assert not echo.exists()
    source = (BACKENDS / "ops_numpy.py").read_text(encoding="utf-8")
    echo.write_text(source.replace('name = "numpy"', 'name = "echo"'), encoding="utf-8")
    try:
        env = {**os.environ, **no_emnist_env(tmp_path)}
        env = {name: value for name, value in env.items() if value is not None}
        run = subprocess.run(
            [*MICROCONV, "train", "--backend", "echo", "--limit", "64",
             "--epochs", "1", "--batch-size", "16", "--validation-size", "16", "--no-dashboard",
             "--out", str(tmp_path / "echo.npz")],
            capture_output=True, text=True, env=env, timeout=300)
        listed = subprocess.run([*MICROCONV, "backends", "--json"],
                                capture_output=True, text=True, env=env, timeout=120)
    finally:
        echo.unlink()
    assert run.returncode == 0, run.stderr
    assert "test accuracy" in run.stdout and (tmp_path / "echo.npz").is_file()
    assert '"name": "echo"' in listed.stdout
