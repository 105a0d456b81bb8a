"""What the grader checks beyond the answers: that a submission left the checks' tools alone.

A check cell compares a student's answer with a reference using functions of torch,
of ``course_utils`` and Python's builtins. A submission that replaces one of them
(``torch.allclose = lambda *a, **k: True``, ``cu.check_close = ...``, ``F.batch_norm = my_bn``
so that the reference is the student's own code, rebinding ``cu`` to another object) would
pass checks it should fail. The grader guards against it in two ways:

- at run time: :func:`snapshot` runs in a cell the grader puts before the submission's
  first cell and records every protected object; each check cell starts with
  :func:`verify`, which raises :class:`IntegrityError` naming whatever was replaced, so the
  item fails and the report flags it;
- in the source: :func:`patched_names` lists assignments to attributes of torch,
  ``course_utils`` and builtins in the submission's code cells, for the report.

No in-process guard stops a student determined to defeat it; these catch the plain
attacks, and the report shows the instructor where to look.
"""
from __future__ import annotations

import ast
import builtins
import importlib
import sys

# Modules whose public callables the checks rely on, and names of further objects.
PROTECTED_MODULES = ("course_utils", "course_utils.checks", "torch.testing", "torch.nn.functional")
PROTECTED_ATTRS = {
    "torch": ("allclose", "isclose", "equal", "isfinite", "isnan", "as_tensor", "tensor", "unravel_index",
              "batch_norm", "layer_norm", "group_norm", "instance_norm", "native_batch_norm", "native_layer_norm",
              "native_group_norm", "rms_norm", "randn", "rand", "manual_seed", "zeros", "ones", "stack", "cat"),
    "torch.Tensor": ("abs", "max", "min", "all", "any", "double", "float", "detach", "cpu", "item", "sum", "mean",
                     "__eq__", "__sub__", "__lt__", "__le__", "__gt__", "__ge__", "allclose", "backward"),
    "torch.nn": ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm", "InstanceNorm2d",
                 "LocalResponseNorm", "RMSNorm", "Module", "Conv2d", "Linear"),
    "builtins": ("abs", "max", "min", "all", "any", "isinstance", "issubclass", "len", "print", "round", "sum",
                 "float", "int", "AssertionError", "NotImplementedError", "Exception", "type", "getattr"),
}
# Names a notebook's cells bind to these modules; a check cell looks them up in its globals.
GLOBAL_MODULES = {"cu": "course_utils", "torch": "torch", "F": "torch.nn.functional", "nn": "torch.nn"}
# Roots of attribute assignments worth flagging in a submission's source.
PATCH_ROOTS = {"torch", "cu", "course_utils", "F", "nn", "builtins", "np", "numpy", "math", "sys", "checks"}
PATCH_ALLOWED = ("torch.backends.",)  # settings, not functions

_SNAPSHOT: dict[str, object] = {}


class IntegrityError(AssertionError):
    """The submission replaced something a check relies on; the check's verdict cannot be trusted."""


def _resolve(path: str):
    module, _, attr = path.rpartition(".")
    if path in sys.modules or not module:
        return importlib.import_module(path)
    try:
        owner = importlib.import_module(module)
    except ImportError:  # "torch.Tensor": a class, not a module
        owner = _resolve(module)
    return getattr(owner, attr)


def _protected() -> dict[str, object]:
    found: dict[str, object] = {}
    for name in PROTECTED_MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if not attr.startswith("_") and callable(value):
                found[f"{name}.{attr}"] = value
    for owner, attrs in PROTECTED_ATTRS.items():
        holder = builtins if owner == "builtins" else _resolve(owner)
        for attr in attrs:
            if hasattr(holder, attr):
                found[f"{owner}.{attr}"] = getattr(holder, attr)
    for name in ("course_utils.checks", "course_utils.integrity", "torch", "torch.nn", "torch.nn.functional"):
        found[f"sys.modules[{name!r}]"] = sys.modules.get(name) or importlib.import_module(name)
    return found


def snapshot() -> int:
    """Record the protected objects (the grader runs this before any student code); returns how many."""
    import course_utils  # noqa: F401 - so that its names are there to record
    _SNAPSHOT.clear()
    _SNAPSHOT.update(_protected())
    return len(_SNAPSHOT)


def replaced(namespace: dict | None = None) -> list[str]:
    """Names of protected objects that are no longer what :func:`snapshot` recorded."""
    if not _SNAPSHOT:
        return []
    changed = []
    for path, original in _SNAPSHOT.items():
        if path.startswith("sys.modules["):
            current = sys.modules.get(path[len("sys.modules['"):-2])
        else:
            module, _, attr = path.rpartition(".")
            try:
                holder = builtins if module == "builtins" else _resolve(module)
                current = getattr(holder, attr)
            except (ImportError, AttributeError):
                current = None
        if current is not original:
            changed.append(path)
    for name, module in GLOBAL_MODULES.items():
        if namespace is not None and name in namespace and namespace[name] is not sys.modules.get(module):
            changed.append(f"the notebook's name {name!r} (expected the module {module})")
    return changed


def verify(namespace: dict | None = None, what: str = "this check") -> None:
    """Raise :class:`IntegrityError` if the submission replaced anything the checks rely on."""
    changed = replaced(namespace)
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise IntegrityError(f"{what} was not run: the submission replaced {shown}, which the checks rely on. "
                             "Restore them (restart the kernel and remove the code that assigns them).")


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id] + parts[::-1])
    return None


def patched_names(source: str) -> list[str]:
    """Assignments in ``source`` that replace attributes of torch, course_utils, builtins, ...

    Covers ``a.b = ...``, ``a.b += ...``, ``del a.b``, ``setattr(a, ...)`` and ``delattr(a, ...)``
    with ``a`` one of :data:`PATCH_ROOTS`; settings under ``torch.backends`` are allowed.
    Source that does not parse gives an empty list (the grader reports that separately).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []

    def note(target: ast.AST, line: int) -> None:
        name = _dotted(target)
        if name and "." in name and name.split(".")[0] in PATCH_ROOTS and not name.startswith(PATCH_ALLOWED):
            found.append(f"line {line}: {name}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute):
                        note(t, node.lineno)
                        break
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            note(node.target, node.lineno)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                note(target, node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            if node.args and (root := _dotted(node.args[0])) and root.split(".")[0] in PATCH_ROOTS:
                found.append(f"line {node.lineno}: {node.func.id}({root}, ...)")
    return sorted(found, key=lambda f: int(f.split(":")[0].split()[1]))
