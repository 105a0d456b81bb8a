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
        raise CheckFailed(f"{name}: contains NaN or inf. Is there a division by a zero variance (missing eps)?")
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


def passed(exercise: str) -> None:
    """Print the line every check cell ends with when all is well."""
    print(f"\u2714 {exercise}: all checks passed")
