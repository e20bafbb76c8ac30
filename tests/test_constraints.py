"""CI installs the versions last tested: every dependency pinned in .ci/constraints.txt, used by .ci/run and .ci/wheel."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", requirement)[0]).lower()


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            out[_name(name)] = version.strip()
    return out


def test_every_dependency_and_extra_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    missing = sorted(wanted - set(pins()))
    assert not missing, f"not in .ci/constraints.txt (run scripts/write_constraints.sh): {missing}"


def test_torch_is_the_cpu_build_on_disk() -> None:
    # An unpinned or newer torch pulls a CUDA build of several GB on these machines.
    assert pins()["torch"] == "2.13.0"


def test_ci_installs_with_the_constraints() -> None:
    for script in ("run", "wheel"):
        text = (ROOT / ".ci" / script).read_text(encoding="utf-8")
        installs = [line for line in text.splitlines() if "pip install" in line and "torch==" not in line]
        assert installs, script
        assert all("-c .ci/constraints.txt" in line for line in installs if "--upgrade pip" not in line), script
    latest = (ROOT / ".ci" / "latest").read_text(encoding="utf-8")
    assert "-c .ci/constraints.txt" not in latest  # .ci/latest is the unconstrained resolve
