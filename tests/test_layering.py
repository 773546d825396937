"""The import rule between the packages (design.md section 2), checked on the source.

One way down: ``uniq/`` holds the shared machinery and does not import ``envs/`` or
``baselines/``, except the glue modules that put the pieces together (``registry.py``,
``cli.py``, ``workflow.py``, ``plan.py``); ``envs/`` uses only uniq's shared formats (datasets, networks
and the policy file, atomic writes), never its training machinery. Imports inside functions
count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLUE = {"registry.py", "cli.py", "workflow.py", "plan.py"}
"""The modules of uniq/ allowed to import envs/ and baselines/ (plan.py prices the workflow:
the config's jobs times the methods' and the environments' measured costs)."""
SHARED = {"uniq.data", "uniq.nets", "uniq.atomic", "uniq.numerics", "uniq.jobtimes"}
"""What envs/ may import from uniq/: the data format, the networks and policy.pt, atomic files,
the portable-numerics pins, and the job-log lines a resumed job's time is read from."""


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (``from uniq import train`` counts as ``uniq.train``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module in ("uniq", "envs", "baselines"):  # from PKG import submodule
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (ROOT / "uniq").glob("*.py") if p.name not in GLUE),
    ids=lambda p: f"uniq/{p.name}",
)
def test_uniq_does_not_import_envs_or_baselines_outside_the_glue(path):
    bad = sorted(m for m in imported_modules(path) if top(m) in ("envs", "baselines"))
    assert not bad, (
        f"uniq/{path.name} imports {bad}; reach environments and methods through "
        "uniq.registry (get_task, evaluation, get_method) instead"
    )


@pytest.mark.parametrize(
    "path", sorted((ROOT / "envs").glob("*.py")), ids=lambda p: f"envs/{p.name}"
)
def test_envs_uses_only_the_shared_formats_of_uniq(path):
    bad = sorted(
        m for m in imported_modules(path) if top(m) == "uniq" and m != "uniq" and m not in SHARED
    )
    assert not bad, f"envs/{path.name} imports uniq's machinery {bad}; only {sorted(SHARED)}"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "baselines").glob("*.py")), ids=lambda p: f"baselines/{p.name}"
)
def test_baselines_do_not_import_envs(path):
    bad = sorted(m for m in imported_modules(path) if top(m) == "envs")
    assert not bad, f"baselines/{path.name} imports {bad}; a method sees data, not environments"


def test_the_glue_modules_exist():  # a renamed glue module must not silently leave the rule
    assert {p.name for p in (ROOT / "uniq").glob("*.py")} >= GLUE


def test_the_checker_sees_lazy_and_package_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from uniq import train\n    import envs.tasks as t\n")
    assert {"uniq.train", "envs.tasks"} <= imported_modules(probe)
