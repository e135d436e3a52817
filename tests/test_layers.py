"""The house's layers: every import of the extension runs down, never back up.

The flow of money is source → settlement → plan → legs → payments, and the imports
follow it one way: a module imports only from its own layer or the ones before it,
and the graph has no cycle. A new module fails this test until it is given a layer
here (and in __init__.py's docstring, which says the same in words).
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Lowest first. Names are module paths relative to the extension's package.
LAYERS: list[set[str]] = [
    {"calculations", "errors", "engine.faults", "migrations"},
    {"models", "inputs"},
    {"crud"},
    {"intake", "engine.rates", "engine.legs", "engine.payouts", "engine.books"},
    {"engine.planning", "engine.small_balances", "engine.fixed_mode"},
    {"distribution"},
    {
        "bitspire",
        "lamassu.connection",
        "lamassu.mapping",
        "lamassu.config",
        "lamassu.poller",
    },
    {
        "services.access",
        "services.accounts",
        "services.commission",
        "services.platform",
        "services.corrections",
        "services.manual",
        "services.settle",
        "services.reports",
        "services.lp_view",
        "services.statement",
        "services.void",
        "services.alerts",
        "services.notify",
        "services.live",
    },
    {"api.route", "api.auth", "api.lamassu"},
    {"views_api", "views"},
    {"tasks"},
    {"__init__"},
]
PACKAGES = {"engine", "lamassu", "services", "api"}
SKIPPED = {"tests", "bench", "scripts", "docs", "static", "templates", "node_modules"}
# companion/ is another extension (satmachineclient): its own package, checked below.
SKIPPED.add("companion")


def extension_modules() -> dict[str, Path]:
    modules = {}
    for path in REPO.rglob("*.py"):
        parts = path.relative_to(REPO).parts
        if parts[0] in SKIPPED or parts[0].startswith("."):
            continue
        name = ".".join(parts)[: -len(".py")]
        if name.endswith(".__init__") and name != "__init__":
            continue  # a subpackage's __init__ only holds its docstring
        modules[name] = path
    return modules


def imported_modules(name: str, path: Path) -> set[str]:
    """The extension modules `name` imports (relative imports resolved)."""
    package = [] if name == "__init__" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package[: len(package) - (node.level - 1)]
        target = [*base, *(node.module.split(".") if node.module else [])]
        if node.module:
            found.add(".".join(target))
        for alias in node.names:
            candidate = ".".join([*target, alias.name])
            if not node.module or ".".join(target) in PACKAGES:
                found.add(candidate)
    return {m for m in found if m and m not in PACKAGES}


def layer_of(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    raise AssertionError(f"{name} has no layer: add it to LAYERS in {__file__}")


def test_every_module_has_a_layer_and_every_layer_a_module():
    modules = extension_modules()
    for name in modules:
        layer_of(name)
    listed = set().union(*LAYERS)
    assert listed <= set(modules), (
        f"layers name missing modules: {listed - set(modules)}"
    )


def test_no_import_runs_back_up_a_layer():
    modules = extension_modules()
    upward = []
    for name, path in sorted(modules.items()):
        for target in sorted(imported_modules(name, path)):
            assert target in modules, f"{name} imports unknown module {target}"
            if layer_of(target) > layer_of(name):
                upward.append(
                    f"{name} (layer {layer_of(name)}) imports {target} "
                    f"(layer {layer_of(target)})"
                )
    assert upward == [], "imports running back up:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    modules = extension_modules()
    graph = {name: imported_modules(name, path) for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "import cycle: " + " -> ".join([*trail, name])
        state[name] = "open"
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_calculations_stays_pure():
    """No I/O and no LNbits in the arithmetic: numbers in, numbers out."""
    tree = ast.parse((REPO / "calculations.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "calculations.py imports nothing of the extension"
            imported.add((node.module or "").split(".")[0])
    assert imported <= {
        "math",
        "re",
        "collections",
        "dataclasses",
        "decimal",
        "fractions",
        "typing",
    }, imported
