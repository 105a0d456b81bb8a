"""Checks for exercises: compare with a reference and say what is wrong.

``check_close`` is ``torch.testing.assert_close`` with a message a student can
act on: the relative error, where the worst element sits, and a hint.
``compare`` prints a small table of differences, one row per quantity, in the
spirit of Karpathy's ``cmp`` from makemore part 4.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import torch


class CheckFailed(AssertionError):
    """An exercise check that did not pass; the message says why."""


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max(max |expected|, tiny): one number for "how far off"."""
    actual = torch.as_tensor(actual).detach().double().cpu()
    expected = torch.as_tensor(expected).detach().double().cpu()
    if actual.numel() == 0:
        return 0.0
    diff = (actual - expected).abs().max().item()
    scale = max(expected.abs().max().item(), 1e-30)
    return diff / scale


@dataclass
class Difference:
    name: str
    max_abs: float
    rel: float
    ok: bool
    shape: tuple


def difference(name: str, actual, expected, rtol: float = 1e-5, atol: float = 1e-6) -> Difference:
    """Measure how far ``actual`` is from ``expected`` without raising."""
    a = torch.as_tensor(actual).detach()
    e = torch.as_tensor(expected).detach()
    if a.shape != e.shape:
        return Difference(name, float("inf"), float("inf"), False, tuple(a.shape))
    a64, e64 = a.double().cpu(), e.double().cpu()
    max_abs = (a64 - e64).abs().max().item() if a.numel() else 0.0
    ok = bool(torch.allclose(a64, e64, rtol=rtol, atol=atol, equal_nan=False)) and bool(torch.isfinite(a64).all())
    return Difference(name, max_abs, relative_error(a64, e64), ok, tuple(a.shape))


def check_close(
    actual,
    expected,
    *,
    name: str = "result",
    rtol: float = 1e-5,
    atol: float = 1e-6,
    hint: str | None = None,
) -> Difference:
    """Raise :class:`CheckFailed` with a helpful message unless ``actual`` ~ ``expected``.

    Checks, in order: that ``actual`` is a tensor, that it is finite, that the
    shapes match, and that the values agree within ``rtol``/``atol`` (the
    ``torch.testing.assert_close`` rule). Returns the measured :class:`Difference`.
    """
    if actual is None:
        raise CheckFailed(f"{name}: got None. Did the function forget to `return` its result?")
    if not isinstance(actual, torch.Tensor):
        raise CheckFailed(f"{name}: expected a torch.Tensor, got {type(actual).__name__}.")
    expected = torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise CheckFailed(
            f"{name}: shape {tuple(actual.shape)} does not match the reference's "
            f"{tuple(expected.shape)}. Check which dimensions you reduce over and keepdim."
        )
    if not torch.isfinite(actual).all():
        raise CheckFailed(f"{name}: contains NaN or inf. Is there a division by a zero variance (missing eps)?"
                          + (f" Hint: {hint}" if hint else ""))
    d = difference(name, actual, expected, rtol=rtol, atol=atol)
    if not d.ok:
        worst = (actual.detach().double().cpu() - expected.detach().double().cpu()).abs().argmax().item()
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), actual.shape))
        msg = (
            f"{name}: differs from the reference (relative error {d.rel:.2e}, max abs difference "
            f"{d.max_abs:.2e} at index {index}; allowed rtol={rtol:g}, atol={atol:g})."
        )
        if hint:
            msg += f" Hint: {hint}"
        raise CheckFailed(msg)
    return d


def compare(rows: Mapping[str, tuple] | Iterable[tuple], rtol: float = 1e-5, atol: float = 1e-6) -> list[Difference]:
    """Print a table of differences; ``rows`` maps a name to ``(actual, expected)``.

    Returns the rows so a cell can assert on them. Prints, for each quantity,
    whether it matches, the max absolute difference and the relative error.
    """
    items = rows.items() if isinstance(rows, Mapping) else [(n, (a, e)) for n, a, e in rows]
    diffs = [difference(n, a, e, rtol=rtol, atol=atol) for n, (a, e) in items]
    width = max([len(d.name) for d in diffs] + [8])
    print(f"{'quantity':<{width}}  match  max abs diff  rel error")
    for d in diffs:
        print(f"{d.name:<{width}}  {'yes' if d.ok else 'NO ':<5}  {d.max_abs:12.2e}  {d.rel:9.2e}")
    return diffs


def check_all(diffs: Sequence[Difference], what: str = "") -> None:
    """Raise :class:`CheckFailed` naming every row of a :func:`compare` table that does not match."""
    bad = [d for d in diffs if not d.ok]
    if bad:
        names = ", ".join(f"{d.name} (rel {d.rel:.1e})" for d in bad)
        raise CheckFailed(f"{what + ': ' if what else ''}these do not match the reference: {names}.")


def check_raises(fn: Callable, exc: type[BaseException], *, name: str, match: str | None = None) -> None:
    """Check that ``fn()`` raises ``exc`` (and, optionally, that its message contains ``match``)."""
    try:
        fn()
    except exc as err:
        if match is not None and match.lower() not in str(err).lower():
            raise CheckFailed(f"{name}: raised {exc.__name__} but the message {str(err)!r} does not mention {match!r}.")
        return
    except NotImplementedError:
        raise
    except Exception as err:  # noqa: BLE001 - we report whatever came instead
        raise CheckFailed(f"{name}: expected {exc.__name__}, got {type(err).__name__}: {err}") from err
    raise CheckFailed(f"{name}: expected {exc.__name__} to be raised, but nothing was raised.")


# (exercise id, part) of every check that passed in this kernel; the cells after an exercise
# ask :func:`answer_or_reference` whether to use the student's answer.
PASSED: set[tuple[str, str | None]] = set()


def passed(exercise: str, part: str | None = None) -> None:
    """Record that a check cell passed and print the line every check cell ends with.

    The main check of an exercise calls ``passed(id)``; a check of one more part of it
    (its own cell, its own points) calls ``passed(id, part)``.
    """
    PASSED.add((exercise, part))
    print(f"\u2714 {exercise}{f' ({part})' if part else ''}: all checks passed")


def answer_or_reference(exercise: str, answer, reference, *, parts: Sequence[str] = ()):
    """The student's ``answer`` if the exercise's main check (and the check ``parts`` named) passed, else ``reference``.

    Cells after an exercise build on its answer (the student's BN goes into a network); with
    a wrong or missing answer they would fail too and cost points that are not theirs to
    lose. They use the course's reference instead, and say so. Name in ``parts`` every
    separately checked part the cell relies on (eval mode, initialisation, ...).
    """
    if (exercise, None) in PASSED and all((exercise, part) in PASSED for part in parts):
        return answer
    name = getattr(reference, "__qualname__", None) or type(reference).__name__
    which = "its check" + (f" and its {', '.join(parts)} check{'s' if len(parts) > 1 else ''}" if parts else "")
    print(f"Note: {exercise} has not passed {which} yet, so the cells below use the course's "
          f"reference ({name}) instead of your answer. Fix the exercise and re-run its check to use yours.")
    return reference


# ----------------------------------------------------------------------------- predictions

def _prediction_problem(value, options: Sequence | None, what: str) -> str | None:
    """Why ``value`` is not a usable prediction (None when it is)."""
    if value is None:
        expect = f"one of {', '.join(map(repr, options))}" if options else "a number"
        return f"{what}: no prediction recorded yet. Set it to {expect} before running the experiment."
    if options is not None:
        if value not in options:
            return f"{what}: {value!r} is not one of the options {', '.join(map(repr, options))}."
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{what}: expected a number, got {type(value).__name__} {value!r}."
    return None


def check_prediction_recorded(value, *, options: Sequence | None = None, name: str = "prediction") -> None:
    """Raise :class:`CheckFailed` unless a prediction is recorded: one of ``options``, or a number.

    The visible check after a predict-first cell: it does not grade, it makes sure the
    prediction comes before the experiment. Any valid prediction lets the notebook go on.
    """
    problem = _prediction_problem(value, options, name)
    if problem:
        raise CheckFailed(problem)
    print(f"Prediction recorded: {name} = {value!r}. The experiment below will tell.")


def check_prediction(value, answer, *, options: Sequence | None = None, rel_tol: float | None = None,
                     name: str = "prediction") -> None:
    """Grade a predict-first answer: ``value`` must equal ``answer`` (an option), or be within ``rel_tol`` of it.

    Instructor-side (a hidden check), so the answer does not show before the experiment.
    """
    problem = _prediction_problem(value, options, name)
    if problem:
        raise CheckFailed(problem)
    if options is not None:
        if value != answer:
            raise CheckFailed(f"{name}: you predicted {value!r}; the experiment shows {answer!r}.")
    else:
        tol = 0.0 if rel_tol is None else rel_tol
        if abs(value - answer) > tol * abs(answer):
            raise CheckFailed(f"{name}: you predicted {value:g}; the experiment gives about {answer:g} "
                              f"(accepted within {tol:.0%}).")


def reveal_prediction(value, outcome, *, name: str = "prediction") -> bool:
    """After the experiment: print what was predicted beside what happened; True when they agree.

    With no prediction recorded (``None``), the outcome is not printed: a student who runs on past
    the question, or a notebook run with errors allowed, must not be handed the answer in words.
    """
    if value is None:
        print(f"{name}: no prediction was recorded, so the outcome is not shown here. Record your "
              f"prediction in `{name}` above, then run this cell again.")
        return False
    right = value == outcome
    print(f"{name}: you predicted {value!r}; the experiment shows {outcome!r}. "
          + ("Right." if right else "Not this time: the cells above say why."))
    return right


# ----------------------------------------------------------------------------- by hand, not delegated

# What a by-hand exercise might call instead of doing the work: for each key, the functions
# (module, name) and the layer classes ("module:Class", whose forward is refused) of torch, timm
# and the course's own reference implementations.
LIBRARY_NORMS: dict[str, list[tuple[str, str]]] = {
    "batch_norm": [("torch.nn.functional", "batch_norm"), ("torch", "batch_norm"),
                   ("torch", "native_batch_norm"), ("torch", "_batch_norm_impl_index"),
                   ("course_utils", "batch_norm2d")],
    "layer_norm": [("torch.nn.functional", "layer_norm"), ("torch", "layer_norm"), ("torch", "native_layer_norm"),
                   ("course_utils", "layer_norm")],
    "group_norm": [("torch.nn.functional", "group_norm"), ("torch", "group_norm"), ("torch", "native_group_norm"),
                   ("course_utils", "group_norm")],
    "instance_norm": [("torch.nn.functional", "instance_norm"), ("torch", "instance_norm"),
                      ("course_utils", "instance_norm2d")],
    "local_response_norm": [("torch.nn.functional", "local_response_norm"), ("course_utils", "local_response_norm")],
    "global_response_norm": [("course_utils", "global_response_norm")],
    "rms_norm": [("torch.nn.functional", "rms_norm"), ("torch", "rms_norm"), ("course_utils", "rms_norm")],
    "normalize": [("torch.nn.functional", "normalize")],
    # lesson 09's pieces of synchronized BN (cu.spawn's processes are forked, so the refusal reaches them)
    "merge_moments": [("course_utils", "merge_moments"), ("course_utils.distributed", "merge_moments")],
    "batch_norm_backward": [("torch", "native_batch_norm_backward"), ("torch", "batch_norm_backward_elemt"),
                            ("torch", "batch_norm_backward_reduce"), ("course_utils", "batch_norm_input_grad"),
                            ("course_utils.distributed", "batch_norm_input_grad")],
}
LIBRARY_LAYERS: dict[str, list[str]] = {
    "batch_norm": ["torch.nn:BatchNorm1d", "torch.nn:BatchNorm2d", "torch.nn:BatchNorm3d", "torch.nn:SyncBatchNorm",
                   "course_utils:BatchNorm2d", "course_utils:SyncBatchNorm2d", "timm.layers:BatchNormAct2d"],
    "layer_norm": ["torch.nn:LayerNorm", "timm.layers:LayerNorm", "timm.layers:LayerNorm2d", "course_utils:LayerNorm"],
    "group_norm": ["torch.nn:GroupNorm", "timm.layers:GroupNorm", "timm.layers:GroupNorm1", "course_utils:GroupNorm"],
    "instance_norm": ["torch.nn:InstanceNorm1d", "torch.nn:InstanceNorm2d", "torch.nn:InstanceNorm3d",
                      "course_utils:InstanceNorm2d"],
    "local_response_norm": ["torch.nn:LocalResponseNorm", "course_utils:LocalResponseNorm"],
    "global_response_norm": ["timm.layers.grn:GlobalResponseNorm", "course_utils:GlobalResponseNorm"],
    "rms_norm": ["torch.nn:RMSNorm", "timm.layers:RmsNorm", "course_utils:RMSNorm"],
    "normalize": [],
    "merge_moments": [],
    "batch_norm_backward": [],
}


def _layer_class(spec: str) -> type | None:
    import importlib
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:  # timm missing: torch's and the course's classes still apply
        return None


def _library_classes() -> tuple[type, ...]:
    """Every library and course norm layer class (a by-hand answer may subclass none of them)."""
    found = [_layer_class(spec) for specs in LIBRARY_LAYERS.values() for spec in specs]
    return tuple(dict.fromkeys(c for c in found if c is not None))


_INHERITED = object()


class by_hand:
    """Context manager: fail the check if the student's code delegates to the library layer it rebuilds.

    ``with cu.by_hand("ex02-bn-forward", "batch_norm", answer=MyBatchNorm2d): out = layer(x)``

    While it is open, the library functions named (keys of :data:`LIBRARY_NORMS`: torch's,
    and the course's own references) and the ``forward`` of the matching layer classes
    (:data:`LIBRARY_LAYERS`: torch's, timm's, the course's) raise :class:`CheckFailed` when
    called; ``answer`` (a class, an instance or a function) must not be or subclass any
    library or course norm layer. Compute the reference before entering it.
    """

    def __init__(self, exercise: str, *functions: str, answer=None):
        unknown = [f for f in functions if f not in LIBRARY_NORMS]
        if unknown:
            raise ValueError(f"unknown library function(s) {unknown}; choose from {sorted(LIBRARY_NORMS)}")
        self.exercise, self.functions, self.answer = exercise, functions, answer
        self._saved: list[tuple[object, str, object]] = []

    def _refuse(self, qualified: str):
        exercise = self.exercise

        def refused(*args, **kwargs):
            raise CheckFailed(f"{exercise}: your answer calls {qualified}, the library code this exercise asks "
                              "you to write yourself. Compute it from tensor operations (mean, var, sqrt, ...).")
        return refused

    def __enter__(self):
        import importlib
        answer = self.answer
        cls = answer if isinstance(answer, type) else type(answer) if answer is not None else None
        if cls is not None:
            library = [c for c in _library_classes() if issubclass(cls, c)]
            if library:
                raise CheckFailed(f"{self.exercise}: {cls.__name__} is a subclass of {library[0].__module__}."
                                  f"{library[0].__name__}, the layer this exercise asks you to write; subclass "
                                  "nn.Module and compute the normalization yourself.")
        for key in self.functions:
            for module_name, attr in LIBRARY_NORMS[key]:
                module = importlib.import_module(module_name)
                if hasattr(module, attr):
                    self._saved.append((module, attr, getattr(module, attr)))
                    setattr(module, attr, self._refuse(f"{module_name}.{attr}"))
            for spec in LIBRARY_LAYERS[key]:
                layer = _layer_class(spec)
                if layer is not None and hasattr(layer, "forward"):
                    # _INHERITED: the class had no forward of its own; restoring deletes ours
                    self._saved.append((layer, "forward", vars(layer).get("forward", _INHERITED)))
                    layer.forward = self._refuse(f"{layer.__module__}.{layer.__name__}")
        return self

    def __exit__(self, *exc):
        for owner, attr, original in reversed(self._saved):
            if original is _INHERITED:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)
        self._saved.clear()
        return False
