"""The library's imports point one way and form no cycle (issue 13, item 5).

Stages, earliest first: sources (and the download stage) -> export -> split -> data (and the classical
baselines, which the loader's first guess uses) -> models (and the training stage) -> reconstruction (a
trained model applied to fields) -> evaluation -> cli. A module may import its own stage, an earlier one,
and the shared base (config, layout, errors, paths, atomic writes, logs, the CF layer, ...); the base imports
only the base. The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` of a
``depthdif`` module, at module level or inside a function (lazy), plus ``importlib.import_module("depthdif...")``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "depthdif"

BASE = -1
# module-name prefix -> rank of its stage (the longest matching prefix wins; anything unlisted is an error)
STAGES = {
    "depthdif": BASE,  # the package itself: __version__ and the lazy public reconstruct
    "depthdif.errors": BASE,
    "depthdif.paths": BASE,
    "depthdif.atomic": BASE,
    "depthdif.logs": BASE,
    "depthdif.config": BASE,
    "depthdif.layout": BASE,
    "depthdif.stage_reads": BASE,
    "depthdif.glorys": BASE,
    "depthdif.month_parts": BASE,
    "depthdif.cf": BASE,
    "depthdif.sources": 0,
    "depthdif.download": 0,
    "depthdif.export": 1,
    "depthdif.split": 2,
    "depthdif.data": 3,
    "depthdif.baselines": 3,
    "depthdif.models": 4,
    "depthdif.train": 4,
    "depthdif.reconstruction": 5,
    "depthdif.evaluation": 6,
    "depthdif.cli": 7,
}

# Imports that go against the stage order, each with its reason. Keep this list short.
UPWARD_EXCEPTIONS = {
    ("depthdif", "depthdif.reconstruction.profiles"):
        "the public depthdif.reconstruct imports its machinery on first call (import depthdif stays light)",
    ("depthdif.export", "depthdif.reconstruction.tiling"):
        "the export cuts a region into patches with the tile grid the reconstruction stitches back",
}

# Lazy imports (inside a function) that close a cycle, each with its reason. Module-level cycles: none.
LAZY_CYCLE_EXCEPTIONS = {
    ("depthdif", "depthdif.reconstruction.profiles"):
        "the public depthdif.reconstruct; gridded reads depthdif.__version__ for the files it writes",
    ("depthdif.reconstruction.gridded", "depthdif.reconstruction.profiles"):
        "reconstruct_file hands a profile file to the profile reader, which is built on gridded's readers",
    ("depthdif.download", "depthdif.sources.copernicus"):
        "the download stage picks its source at call time; the sources raise download's DownloadError",
    ("depthdif.download", "depthdif.sources.local"):
        "the download stage picks its source at call time; the sources raise download's DownloadError",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def _targets(module: str, node: ast.AST) -> set[str]:
    """The depthdif modules one import statement (or importlib call) loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.split(".")[0] == "depthdif"}
    if isinstance(node, ast.ImportFrom):
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base.split(".")[0] != "depthdif":
            return set()
        return {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
            and node.args[0].value.startswith("depthdif")):  # fmt: skip
        return {node.args[0].value}
    return set()


def import_edges() -> dict[tuple[str, str], bool]:
    """(importer, imported) -> True when every such import is lazy (inside a function)."""
    edges: dict[tuple[str, str], bool] = {}

    def visit(module: str, node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            for target in _targets(module, child):
                edges[(module, target)] = edges.get((module, target), True) and lazy
            visit(module, child, lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    for module, path in MODULES.items():
        visit(module, ast.parse(path.read_text(), filename=str(path)), False)
    return edges


EDGES = import_edges()


def stage_of(module: str) -> int:
    matches = [prefix for prefix in STAGES if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} belongs to no stage: add it to STAGES in {Path(__file__).name}"
    return STAGES[max(matches, key=len)]


def cycles(edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for importer, imported in edges:
        graph.setdefault(importer, set()).add(imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_graph_is_read():
    assert "depthdif.data.dataset" in MODULES and "depthdif.evaluation.protocol" in MODULES
    assert EDGES[("depthdif.data.dataset", "depthdif.data.index")] is False  # module level
    assert EDGES[("depthdif.evaluation.passes", "depthdif.data.dataset")] is True  # lazy
    assert ("depthdif.download", "depthdif.sources.synthetic") in EDGES  # importlib.import_module
    assert cycles([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == [["a", "b", "c"]]


def test_every_import_names_an_existing_module():
    missing = sorted({imported for _, imported in EDGES if imported not in MODULES})
    assert missing == [], f"imports of modules that do not exist (moved?): {missing}"


def test_no_import_cycle_at_module_level():
    assert cycles(edge for edge, lazy in EDGES.items() if not lazy) == []


def test_no_import_cycle_but_the_listed_lazy_ones():
    for edge in LAZY_CYCLE_EXCEPTIONS:
        assert EDGES.get(edge) is True, f"{edge} is listed as a lazy exception but is not a lazy import"
    kept = [edge for edge in EDGES if edge not in LAZY_CYCLE_EXCEPTIONS]
    assert cycles(kept) == [], "import cycle (through a lazy import that is not a listed exception)"


@pytest.mark.parametrize(("lower", "higher"), [
    ("depthdif.data", ("depthdif.models", "depthdif.train", "depthdif.reconstruction", "depthdif.evaluation",
                       "depthdif.cli")),
    ("depthdif.models", ("depthdif.train", "depthdif.reconstruction", "depthdif.evaluation", "depthdif.cli")),
])  # fmt: skip
def test_data_and_models_import_nothing_above_them(lower, higher):
    upward = sorted(
        (importer, imported) for importer, imported in EDGES
        if importer.startswith(lower + ".") and imported.startswith(higher)
    )  # fmt: skip
    assert upward == [], f"{lower} imports a later stage (lazily or not): {upward}"


def test_imports_point_one_way():
    for edge in UPWARD_EXCEPTIONS:
        assert edge in EDGES, f"{edge} is listed as an upward exception but is no longer imported"
    upward = sorted(
        f"{importer} ({stage_of(importer)}) -> {imported} ({stage_of(imported)})"
        for importer, imported in EDGES
        if stage_of(imported) > stage_of(importer) and (importer, imported) not in UPWARD_EXCEPTIONS
    )  # fmt: skip
    assert upward == [], "imports against the stage order " + str(STAGES) + ":\n" + "\n".join(upward)


def test_the_old_top_level_modules_are_gone():
    old = ("datasets", "datamodule", "masking", "normalization", "evaluate", "evaluate_passes",
           "evaluate_baselines", "metrics", "plots", "spectra", "real_sample")
    assert [name for name in old if (SRC / f"{name}.py").exists()] == []
