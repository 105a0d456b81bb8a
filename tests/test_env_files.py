"""environment.yml, pyproject.toml and the constraints file agree on the package set."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def _pyproject() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {_name(r) for r in extra}
    return names


def _environment_yml() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"\s+- ([A-Za-z0-9_.-]+)==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_every_dependency_is_pinned_and_nothing_else():
    assert _pyproject() == set(_constraints()), "pyproject.toml and requirements/constraints.txt list different packages"


def test_environment_yml_matches_the_constraints_exactly():
    assert _environment_yml() == _constraints(), "environment.yml's pip section must repeat the constraints' pins"


def test_torch_pins_are_the_tested_pair():
    pins = _constraints()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_ipywidgets_bounds_admit_colab_and_8():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = next(r for r in project["dependencies"] if _name(r) == "ipywidgets")
    assert ">=7.7" in spec and "<9" in spec


def test_installed_versions_match_the_pins():
    from importlib.metadata import version
    for name, pinned in _constraints().items():
        assert version(name) == pinned, f"{name} {version(name)} is installed but {pinned} is pinned"


def _colab_pins() -> dict[str, str]:
    text = (ROOT / "requirements" / "colab.txt").read_text()
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def test_colab_versions_are_dated_and_name_their_python():
    text = (ROOT / "requirements" / "colab.txt").read_text()
    assert re.search(r"on \d{4}-\d{2}-\d{2}", text), "colab.txt says when Colab's versions were read"
    assert re.search(r"^# python: 3\.\d+$", text, re.M), "colab.txt names Colab's Python ('# python: 3.N')"
    assert {"torch", "torchvision", "ipywidgets", "ipykernel"} <= set(_colab_pins())


def test_the_course_admits_colab_versions():
    """Colab installs course_utils with --no-deps, so pip never checks pyproject's bounds there: check them here."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    python = re.search(r"^# python: (3\.\d+)", (ROOT / "requirements" / "colab.txt").read_text(), re.M).group(1)
    assert Requirement(f"python{project['requires-python']}").specifier.contains(python + ".0")
    colab = _colab_pins()
    for req in map(Requirement, project["dependencies"]):
        if req.name.lower() in colab:
            assert req.specifier.contains(colab[req.name.lower()]), \
                f"pyproject.toml asks {req}, Colab has {req.name}=={colab[req.name.lower()]}"
    assert set(colab) - {"ipykernel"} <= {Requirement(r).name.lower() for r in project["dependencies"]}, \
        "colab.txt pins a package the course does not depend on"
