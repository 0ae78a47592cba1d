"""Packaging: one set of pins (constraints.txt), repeated by environment.yml, used by make and CI."""

from __future__ import annotations

import os
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pins(lines: list[str]) -> dict[str, str]:
    """``name==version`` lines -> {canonical name: version}; anything else is an error."""
    found = {}
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", line)
        assert match, f"not an exact pin: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in found, f"{name} pinned twice"
        found[name] = match[2]
    return found


def constraints() -> dict[str, str]:
    text = (ROOT / "constraints.txt").read_text()
    return pins([line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()])


def environment() -> tuple[str, list[str], list[str]]:
    """(env name, conda dependencies, pip entries) of environment.yml, read without a YAML library:
    the file is ours and keeps to a plain block layout."""
    lines = [ln.rstrip() for ln in (ROOT / "environment.yml").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    name = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("name:"))
    start = lines.index("dependencies:")
    conda, pip, in_pip, pip_indent = [], [], False, None
    for line in lines[start + 1:]:
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break
        entry = line.strip().removeprefix("- ").strip()
        if in_pip and indent > pip_indent:
            pip.append(entry)
            continue
        in_pip = entry == "pip:"
        pip_indent = indent
        if not in_pip:
            conda.append(entry)
    return name, conda, pip


def test_environment_yml_repeats_the_constraints() -> None:
    name, conda, pip = environment()
    assert name == "minillama"
    assert "python=3.11" in conda and "pip" in conda
    assert pip[-1] == "-e ."
    assert pins(pip[:-1]) == constraints()


def test_constraints_pin_every_declared_dependency_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pinned = constraints()
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is a dependency but constraints.txt does not pin it"
        assert Version(pinned[name]) in requirement.specifier, f"{name}=={pinned[name]} not in {requirement}"
    assert pinned["torch"] == "2.13.0"


def test_installed_versions_are_the_pinned_ones() -> None:
    for name, pinned in constraints().items():
        installed = Version(version(name)).public  # torch reports 2.13.0+cpu
        assert installed == pinned, f"{name}: installed {installed}, constraints.txt pins {pinned}"


def makefile_rule(target: str) -> tuple[str, list[str]]:
    """(prerequisites, recipe lines) of a Makefile rule."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith(f"{target}:"))
    recipe = []
    for line in lines[head + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return lines[head].split(":", 1)[1].split("##")[0], recipe


def test_make_installs_with_the_constraints() -> None:
    prerequisites, recipe = makefile_rule("$(VENV)/.installed")
    assert "constraints.txt" in prerequisites.split()  # a new pin reinstalls
    installs = [line for line in recipe if "pip install" in line and "-e " in line]
    assert installs and all("-c constraints.txt" in line for line in installs)
    test_prerequisites, test_recipe = makefile_rule("test")
    assert "$(VENV)/.installed" in test_prerequisites.split()
    assert any("pytest" in line and "tests" in line.split() for line in test_recipe)
    assert test_recipe[0].endswith("lint-imports")  # the floors are checked before anything runs


def test_ci_runs_make_test() -> None:
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK)
    commands = [ln.strip() for ln in script.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert "set -euo pipefail" in commands
    assert commands[-1] == "make test"
