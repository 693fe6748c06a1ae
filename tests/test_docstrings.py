"""Docstrings of the public API in the style of diffusers' schedulers (issue 13): Args / Returns / Raises.

Every public function, class and method (a name without a leading ``_``) of the stage entry points and of the
model and baseline modules has a docstring; one that takes arguments has an ``Args:`` section naming each of
them, one that returns a value a ``Returns:`` section (``Yields:`` for a generator), and one that raises an
exception itself a ``Raises:`` section. A class documents its constructor's arguments (or its dataclass fields)
in its own docstring or its ``__init__``'s. The check reads the source with ``ast`` (nothing is imported), so a
new public function without these sections fails here.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import depthdif

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(depthdif.__file__).resolve().parent

# the stage entry points (what the Snakemake rules and the CLI call) and the public model/baseline modules
STAGE_MODULES = [
    "__init__.py",  # depthdif.reconstruct
    "download.py",
    "export.py",
    "split.py",
    "train.py",
    "evaluation/protocol.py",
    "evaluation/baseline_predictions.py",
    "evaluation/real_sample.py",
]
MODEL_MODULES = ["models/module.py", "models/samplers.py", "models/diffusion.py", "models/unet.py"]


def checked_modules() -> list[str]:
    """Every module the check covers, relative to the package folder."""
    reconstruction = sorted(f"reconstruction/{p.name}" for p in (PACKAGE / "reconstruction").glob("*.py"))
    # baselines/_common.py is private: its public names reach users through baselines/__init__.py, checked there
    baselines = sorted(f"baselines/{p.name}" for p in (PACKAGE / "baselines").glob("*.py") if p.name != "_common.py")
    return STAGE_MODULES + reconstruction + baselines + MODEL_MODULES


# Deliberate exceptions. Lightning hooks: Lightning calls them with its own arguments and documents them; their
# docstrings say what DepthDif does in them, an Args section would only repeat Lightning's.
LIGHTNING_HOOKS = frozenset({
    "setup", "training_step", "validation_step", "configure_optimizers", "on_train_end",
    "on_validation_epoch_start", "on_validation_epoch_end", "on_before_optimizer_step",
})
# Properties read like attributes: one line saying what the value is, no Returns section.
SECTION = re.compile(r"^\s*(Args|Returns|Yields|Raises|Examples?|Notes?):\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Needs:
    """What a function's body asks of its docstring."""

    params: tuple[str, ...]
    returns: bool
    yields: bool
    raises: bool


def own_nodes(function: ast.AST):
    """The nodes of ``function``'s body, without those of nested functions, classes and lambdas."""
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def needs_of(function: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> Needs:
    """The parameters of ``function`` (without self/cls) and whether it returns, yields or raises itself."""
    args = function.args
    params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if method and params and params[0] in ("self", "cls"):
        params = params[1:]
    params += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    body = list(own_nodes(function))
    returns = any(isinstance(n, ast.Return) and n.value is not None
                  and not (isinstance(n.value, ast.Constant) and n.value.value is None) for n in body)
    yields = any(isinstance(n, ast.Yield | ast.YieldFrom) for n in body)
    raises = any(isinstance(n, ast.Raise) and n.exc is not None for n in body)  # a bare `raise` re-raises
    return Needs(tuple(params), returns, yields, raises)


def section(doc: str, name: str) -> str | None:
    """The text of section ``name`` of a Google-style docstring, or None without one."""
    match = re.search(rf"^\s*{name}:\s*$", doc, re.MULTILINE)
    if match is None:
        return None
    following = SECTION.search(doc, match.end())
    return doc[match.end(): following.start() if following else len(doc)]


def unnamed(params: tuple[str, ...], args: str) -> list[str]:
    """The parameters that the Args section does not name."""
    return [p for p in params if not re.search(rf"(?<![\w.]){re.escape(p)}\b", args)]


def function_problems(function, qualname: str, method: bool) -> list[str]:
    """What the docstring of one public function or method lacks."""
    doc = ast.get_docstring(function)
    if not doc:
        return [f"{qualname}: no docstring"]
    decorators = {ast.unparse(d) for d in function.decorator_list}
    if "property" in decorators or any(d.endswith((".setter", "cached_property")) for d in decorators):
        return []
    if method and function.name in LIGHTNING_HOOKS:
        return []
    needs = needs_of(function, method)
    problems = []
    args = section(doc, "Args")
    if needs.params and args is None:
        problems.append(f"{qualname}: no Args section (takes {', '.join(needs.params)})")
    elif needs.params and unnamed(needs.params, args):
        problems.append(f"{qualname}: Args does not name {unnamed(needs.params, args)}")
    if needs.returns and not needs.yields and section(doc, "Returns") is None:
        problems.append(f"{qualname}: returns a value but has no Returns section")
    if needs.yields and section(doc, "Yields") is None:
        problems.append(f"{qualname}: is a generator but has no Yields section")
    if needs.raises and section(doc, "Raises") is None:
        problems.append(f"{qualname}: raises but has no Raises section")
    return problems


def class_problems(cls: ast.ClassDef) -> list[str]:
    """What the docstrings of one public class and its public methods lack."""
    doc = ast.get_docstring(cls) or ""
    problems = [] if doc else [f"{cls.name}: no docstring"]
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    init_doc = (ast.get_docstring(init) or "") if init is not None else ""
    if init is not None:
        needs = needs_of(init, method=True)
        params = needs.params
        if needs.raises and section(doc, "Raises") is None and section(init_doc, "Raises") is None:
            problems.append(f"{cls.name}: its constructor raises but no Raises section says why")
    elif any("dataclass" in ast.unparse(d) for d in cls.decorator_list):
        params = tuple(n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name))
    else:
        params = ()
    args = (section(doc, "Args") or "") + (section(init_doc, "Args") or "")
    if params and not args:
        problems.append(f"{cls.name}: no Args section for its constructor ({', '.join(params)})")
    elif params and unnamed(params, args):
        problems.append(f"{cls.name}: Args does not name {unnamed(params, args)}")
    for member in cls.body:
        if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef) and not member.name.startswith("_"):
            problems += function_problems(member, f"{cls.name}.{member.name}", method=True)
    return problems


def module_problems(relative: str, root: Path = PACKAGE) -> list[str]:
    """What the public docstrings of one module lack (``relative`` to ``root``, the package folder)."""
    tree = ast.parse((root / relative).read_text(encoding="utf-8"))
    problems = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or node.name.startswith("_"):
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            problems += function_problems(node, node.name, method=False)
        elif isinstance(node, ast.ClassDef):
            problems += class_problems(node)
    return problems


@pytest.mark.parametrize("relative", checked_modules())
def test_public_functions_document_args_returns_and_raises(relative):
    problems = module_problems(relative)
    assert not problems, f"depthdif/{relative}:\n  " + "\n  ".join(problems)


def test_the_check_covers_the_entry_points_and_sees_a_missing_section(tmp_path):
    modules = checked_modules()
    for expected in ("reconstruction/gridded.py", "baselines/cokriging.py", "baselines/spatial.py",
                     "models/module.py", "evaluation/protocol.py"):
        assert expected in modules
    (tmp_path / "bad.py").write_text(
        'def f(a, b):\n    """Adds."""\n    if a:\n        raise ValueError(a)\n    return a + b\n\n'
        'def g(a):\n    """G.\n\n    Args:\n        a: a.\n    """\n    yield a\n\n'
        'class C:\n    """C."""\n\n    def __init__(self, size):\n        self.size = size\n\n'
        'def _private(a):\n    return a\n'
    )
    assert module_problems("bad.py", root=tmp_path) == [
        "f: no Args section (takes a, b)",
        "f: returns a value but has no Returns section",
        "f: raises but has no Raises section",
        "g: is a generator but has no Yields section",
        "C: no Args section for its constructor (size)",
    ]


# ------------------------------------------------------------------- nothing points outside the repository
# Built from parts so that this file does not match itself.
OUTSIDE = [".." + "/shared", "/" + "work/", "." + "library", "DESIGN" + ".md", "notes" + "/"]
SCANNED = ["src", "workflow", "tests", "profiles", "bench"]


def test_no_comment_or_docstring_points_outside_the_repository():
    found = []
    files = [REPO / "Snakefile"] + [p for folder in SCANNED if (REPO / folder).is_dir()
                                    for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".smk", ".yaml", ".sh")]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            hits = [word for word in OUTSIDE if word in line]
            if hits:
                found.append(f"{path.relative_to(REPO)}:{number}: {hits}: {line.strip()[:100]}")
    assert not found, "references to files outside the repository:\n  " + "\n  ".join(found)
