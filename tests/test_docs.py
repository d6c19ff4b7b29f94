"""The docs name only what exists: CLI flags, library names, keyword arguments, files.

Checked generically (nothing here lists the names the docs use), so a renamed module, function,
parameter or flag makes this fail until the docs follow. Library names are looked up in the
source with ``ast``, without importing it: the estimator and Keras modules need TensorFlow
versions that no single environment has together.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

from cloud_exporter import cli

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "cloud_exporter"
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])

# Flags of other programs, or of a change the docs propose: (flag, why it is not ours).
FOREIGN_FLAGS = {
    "--compact": "checkov",
    "--quiet": "checkov",
    "--verify": "performance.md R6 proposes it; not built",
}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
NAME = re.compile(r"(?<![\w.])(?:cloud_exporter|ce)(?:\.[A-Za-z_]\w*)+")
PY_FILE = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[A-Za-z_]\w*\.py)\b")
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _read(doc: Path) -> str:
    return doc.read_text(encoding="utf-8")


def _ids(docs: list[Path]) -> list[str]:
    return [str(d.relative_to(REPO)) for d in docs]


# ---- CLI flags ------------------------------------------------------------------------------


def _options(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
    return found


@cache
def _project_flags() -> set[str]:
    """Every ``"--flag"`` string literal in the project's code (benchmarks', examples' argparse)."""
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.sh", "*.yml", "*.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    flags: set[str] = set()
    for name in tracked:
        path = REPO / name
        if path.is_file():
            flags.update(re.findall(r"""["'](--[a-z][a-z0-9-]*)["'\s=]""", path.read_text("utf-8")))
    return flags


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_flag_the_docs_mention_exists(doc: Path) -> None:
    ours = _options(cli._parser())
    wrong = []
    for number, line in enumerate(_read(doc).splitlines(), 1):
        cli_line = "cloud-exporter" in line or doc.name == "cli.md"
        for flag in FLAG.findall(line):
            if flag in FOREIGN_FLAGS or "_" in flag:  # TF Serving's and SageMaker's style
                continue
            if flag not in (ours if cli_line else ours | _project_flags()):
                wrong.append(f"{doc.name}:{number}: {flag}")
    assert not wrong, "flags no parser defines:\n" + "\n".join(wrong)


# ---- library names, read from the source ----------------------------------------------------


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "cloud_exporter":
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    return ".".join([*parts[:keep], *([node.module] if node.module else [])])


@cache
def _definition(module: str, name: str) -> ast.AST | str | None:
    """The node defining ``module.name`` (following re-exports), a module name, or None."""
    path = _module_file(module)
    if path is None:
        return None
    for node in _tree(path).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return node
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = _absolute(module, node, path.name == "__init__.py")
                    return _definition(source, alias.name)
    return f"{module}.{name}" if _module_file(f"{module}.{name}") else None


def _member(cls: ast.ClassDef, name: str) -> bool:
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id == name:
                return True
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return True
    return False


def _resolve(dotted: str) -> ast.AST | str | None:
    """The definition ``cloud_exporter.a.b`` names; classes answer for their members."""
    parts = dotted.split(".")
    found: ast.AST | str | None = "cloud_exporter"
    for i, part in enumerate(parts[1:], 1):
        if isinstance(found, str):
            found = _definition(found, part)
        elif isinstance(found, ast.ClassDef):
            return found if _member(found, part) else None
        else:
            return None  # an attribute of a function or a value: not checked further
        if found is None:
            return None
        if i == len(parts) - 1:
            return found
    return found


def _names(text: str) -> set[str]:
    names = {m.replace("ce.", "cloud_exporter.", 1) for m in NAME.findall(text)}
    for block in CODE_BLOCK.findall(text):
        for node in ast.walk(_parse(block)):
            if isinstance(node, ast.ImportFrom) and _ours(node.module):
                names.update(f"{node.module}.{a.name}" for a in node.names if a.name != "*")
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.startswith("cloud_exporter."))
    return names


def _ours(module: str | None) -> bool:
    return (module or "").split(".")[0] == "cloud_exporter"


def _parse(block: str) -> ast.Module:
    """A python block; a block of signatures (``f(a, *, b=None) -> T``) as ``def`` statements."""
    try:
        return ast.parse(block)
    except SyntaxError:
        pass
    body: list[ast.stmt] = []
    for chunk in _statements(block):
        for text in (chunk, "def " + re.sub(r"<[^<>]*>", "None", chunk) + ": ..."):
            try:
                body.extend(ast.parse(text).body)
                break
            except SyntaxError:
                continue
        else:
            raise AssertionError(f"a python block in the docs does not parse:\n{chunk}")
    return ast.Module(body=body, type_ignores=[])


def _statements(block: str) -> list[str]:
    """The block cut where parentheses balance at a line end (comments dropped)."""
    chunks, current, depth = [], [], 0
    for line in block.splitlines():
        code = line.split("#", 1)[0].rstrip()
        if not code:
            continue
        current.append(code)
        depth += code.count("(") - code.count(")")
        if depth <= 0:
            chunks.append("\n".join(current).replace("(...,", "(").replace("(...)", "()"))
            current, depth = [], 0
    return chunks


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_library_name_the_docs_mention_exists(doc: Path) -> None:
    text = _read(doc)
    missing = sorted(n for n in _names(text) if _resolve(n) is None)
    assert not missing, f"{doc.name} names what the package does not define: {missing}"


# ---- keyword arguments in python blocks -----------------------------------------------------


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted library name, for the imports of one doc's python blocks."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _ours(node.module):
            for a in node.names:
                bound[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if _ours(a.name):  # "import cloud_exporter.x" binds the package
                    bound[a.asname or "cloud_exporter"] = a.name if a.asname else "cloud_exporter"
    return bound


def _dotted(node: ast.AST, bound: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value, bound)
        return f"{head}.{node.attr}" if head else None
    return None


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    return {a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]}


def _accepted(found: ast.AST | str | None, module_of: str) -> set[str] | None:
    """Keyword names a callable accepts; None when it takes any (``**kwargs`` of no TypedDict)."""
    if isinstance(found, ast.ClassDef):
        init = next((n for n in found.body if getattr(n, "name", "") == "__init__"), None)
        if init is None:  # a dataclass: its fields
            return {n.target.id for n in found.body if isinstance(n, ast.AnnAssign)}
        found = init
    if not isinstance(found, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    args = found.args
    names = _parameters(found)
    if args.kwarg is None:
        return names
    typed = args.kwarg.annotation
    if isinstance(typed, ast.Subscript) and getattr(typed.value, "id", "") == "Unpack":
        options = _definition(module_of, getattr(typed.slice, "id", ""))
        if isinstance(options, ast.ClassDef):
            return names | {n.target.id for n in options.body if isinstance(n, ast.AnnAssign)}
    return None


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_keyword_in_the_docs_examples_is_a_parameter(doc: Path) -> None:
    blocks = [_parse(b) for b in CODE_BLOCK.findall(_read(doc))]
    bound: dict[str, str] = {}
    for tree in blocks:
        bound.update(_imports(tree))
    wrong = []
    for tree in blocks:
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            dotted = _dotted(call.func, bound)
            if dotted is None:
                continue
            found = _resolve(dotted)
            assert found is not None, f"{doc.name}: {dotted} does not exist"
            module = dotted.rsplit(".", 1)[0]
            while _module_file(module) is None:
                module = module.rsplit(".", 1)[0]
            accepted = _accepted(found, _owner(module, dotted.rsplit(".", 1)[1]))
            given = {k.arg for k in call.keywords if k.arg}
            if accepted is not None and not given <= accepted:
                wrong.append(f"{dotted}({', '.join(sorted(given - accepted))}=...)")
    assert not wrong, f"{doc.name} passes keywords these do not take: {wrong}"


def _owner(module: str, name: str) -> str:
    """The module that really defines ``module.name`` (a re-export is followed)."""
    path = _module_file(module)
    for node in _tree(path).body if path else []:
        if isinstance(node, ast.ImportFrom) and any(
            (a.asname or a.name) == name for a in node.names
        ):
            source = _absolute(module, node, path.name == "__init__.py")
            return _owner(source, name) if _module_file(source) else module
    return module


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_signature_the_docs_show_matches_the_code(doc: Path) -> None:
    wrong = []
    for block in CODE_BLOCK.findall(_read(doc)):
        for node in _parse(block).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            real = _find_callable(node.name)
            assert real is not None, f"{doc.name} shows a signature of {node.name}: no such name"
            accepted = _accepted(*real)
            shown = _parameters(node)
            if accepted is not None and not shown <= accepted:
                wrong.append(f"{node.name}: {sorted(shown - accepted)}")
    assert not wrong, f"{doc.name} shows parameters the code does not have: {wrong}"


def _find_callable(name: str) -> tuple[ast.AST, str] | None:
    """A public callable ``name`` in any module of the package, and its module."""
    for path in sorted(PACKAGE.glob("*.py")):
        module = "cloud_exporter" if path.stem == "__init__" else f"cloud_exporter.{path.stem}"
        found = _definition(module, name)
        if isinstance(found, (ast.FunctionDef, ast.ClassDef)):
            return found, _owner(module, name)
    return None


# ---- files ----------------------------------------------------------------------------------


@cache
def _tracked() -> tuple[set[str], set[str]]:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return set(files), {f.rsplit("/", 1)[-1] for f in files}


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_python_file_the_docs_mention_exists(doc: Path) -> None:
    paths, basenames = _tracked()
    missing = []
    for mention in set(PY_FILE.findall(_read(doc))):
        if mention.startswith("python/"):  # a file of TensorFlow's own repository
            continue
        exists = mention in paths if "/" in mention else mention in basenames
        if not exists and "/" in mention and mention.split("/")[0] in ("estimator", "install"):
            exists = f"tests/{mention}" in paths
        if not exists:
            missing.append(mention)
    assert not missing, f"{doc.name} mentions files that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_tables_that_map_modules_to_names_are_true(doc: Path) -> None:
    """A table row naming package modules and names (protocol.md's map): each name is defined in
    one of those modules (``Keep*``: some name with that prefix)."""
    wrong = []
    for line in _read(doc).splitlines():
        cells = (
            [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        )
        modules = [
            f"cloud_exporter.{m[:-3]}"
            for cell in cells
            for m in re.findall(r"`(\w+\.py)`", cell)
            if (PACKAGE / m).is_file()
        ]
        names = [n for n in re.findall(r"`([A-Za-z_][\w.]*\*?)`", cells[-1] if cells else "")]
        if not modules or not names or any(n.endswith(".py") for n in names):
            continue
        for name in names:
            if name.endswith("*"):
                found = any(_prefixed(m, name[:-1]) for m in modules)
            else:
                found = any(_in_module(m, name) for m in modules)
            if not found:
                wrong.append(f"{name} (in {', '.join(modules)})")
    assert not wrong, f"{doc.name}: a module table names what its modules do not define: {wrong}"


def _in_module(module: str, name: str) -> bool:
    """``name`` (or ``Class.member``) is defined in the file of ``module`` itself (not imported)."""
    head, _, member = name.partition(".")
    path = _module_file(module)
    body = _tree(path).body if path else []
    found = next((n for n in body if getattr(n, "name", None) == head), None)
    if member:
        return isinstance(found, ast.ClassDef) and _member(found, member)
    return found is not None


def _prefixed(module: str, prefix: str) -> bool:
    path = _module_file(module)
    return path is not None and any(
        getattr(n, "name", "").startswith(prefix) for n in _tree(path).body
    )


# ---- the checks themselves ------------------------------------------------------------------


def test_the_checks_catch_stale_names_flags_and_keywords() -> None:
    assert _resolve("cloud_exporter.publish") is not None
    assert _resolve("cloud_exporter.testing.FaultyFileSystem.reset_counters") is not None
    assert _resolve("cloud_exporter.no_such_function") is None
    assert _resolve("cloud_exporter.testing.FaultyFileSystem.no_such_method") is None
    assert _resolve("cloud_exporter.no_such_module.thing") is None
    publish = _resolve("cloud_exporter.publish")
    accepted = _accepted(publish, _owner("cloud_exporter", "publish"))
    assert accepted is not None and {"keep", "storage_options"} <= accepted
    assert "no_such_keyword" not in accepted
    exporter = _resolve("cloud_exporter.estimator.LatestExporter")
    options = _accepted(exporter, "cloud_exporter.estimator")
    assert options is not None and "exports_to_keep" in options and "export_base" in options
    assert _in_module("cloud_exporter.commit", "write_marker")
    assert not _in_module("cloud_exporter.commit", "no_such_function")
    assert "--keep" in _options(cli._parser()) and "--no-such" + "-flag" not in _project_flags()
