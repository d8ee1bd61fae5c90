"""Production code never imports the test stand-ins: probe/sim/ is for tests, ``make demo``
(probe/demo/) and the one function of the CLI that wires ``probe line --sim``.

The check reads every module of probe/ with ``ast`` (docstrings that name probe.sim are
prose, not imports), so an import added anywhere else, at the top or inside a function,
absolute or relative, fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PROBE = Path(__file__).resolve().parent.parent / "probe"
SIM_PACKAGES = ("sim", "demo")  # probe/sim itself, and the demo built on it
#: (module, function) allowed to import probe.sim: the CLI's explicit --sim wiring.
SIM_WIRING = {("probe.cli", "_simulated_line_report")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PROBE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute names an import statement brings in (relative ones resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[:len(package) - node.level + 1]
        base = ".".join([*anchor, *([base] if base else [])])
    # "from probe import sim" imports the package probe.sim as a name
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def sim_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """``module:line`` of every import of probe.sim in ``source``, outside SIM_WIRING."""
    found: list[str] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) \
                else function
            if isinstance(child, ast.Import | ast.ImportFrom) \
                    and (module, function) not in SIM_WIRING \
                    and any(m == "probe.sim" or m.startswith("probe.sim.")
                            for m in imported_modules(child, module, is_package)):
                found.append(f"{module}:{child.lineno}")
            visit(child, name)

    visit(ast.parse(source), None)
    return found


def production_modules() -> list[Path]:
    return [path for path in sorted(PROBE.rglob("*.py"))
            if path.relative_to(PROBE).parts[0] not in SIM_PACKAGES]


def test_no_production_module_imports_probe_sim() -> None:
    modules = production_modules()
    assert any(module_name(p) == "probe.cli" for p in modules)
    assert any(module_name(p) == "probe.board.line" for p in modules)
    found = [hit for path in modules
             for hit in sim_imports(path.read_text(), module_name(path),
                                    path.name == "__init__.py")]
    assert found == [], f"production code imports probe/sim: {found}"


def test_the_cli_wiring_is_the_only_exception() -> None:
    """The CLI really does import probe.sim in its wiring function (else the exception is
    stale and should go), and nowhere else."""
    source = (PROBE / "cli.py").read_text()
    assert sim_imports(source, "probe.other_module") != []
    assert sim_imports(source, "probe.cli") == []


def test_the_check_finds_every_form_of_import() -> None:
    forms = {
        "import probe.sim.line": "probe.board.line",
        "from probe.sim.line import open_scenario": "probe.board.line",
        "from probe.sim import probe_config": "probe.board.line",
        "from probe import sim": "probe.board.line",
        "from ..sim.line import SimClock": "probe.board.line",
        "from .. import sim": "probe.board.line",
        "from . import line": "probe.sim",  # probe/sim/__init__.py seen from inside
        "def f():\n    from probe.sim.modem import ModemEmulator": "probe.dial.modem",
        "class C:\n    def m(self):\n        import probe.sim": "probe.uplink.mqtt",
        "if True:\n    from probe.sim.line import SimBoard": "probe.cli",
    }
    for source, module in forms.items():
        assert sim_imports(source, module, is_package=module == "probe.sim") != [], source
    harmless = [
        '"""Example::\n\n    from probe.sim.line import SimClock\n"""',
        "from probe.simple import x",
        "import probe.similar",
        "from probe.board.line import line_report",
        "from . import simulation",
    ]
    for source in harmless:
        assert sim_imports(source, "probe.board.line") == [], source
