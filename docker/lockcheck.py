"""Are the images' lock files (docker/requirements/*.txt) in step with pyproject.toml? Offline: only the files.

Each lock is `uv pip compile` output for some of pyproject's extras (LOCKS below, the same as `make lock`):
  - every pin is `name==version` with at least one sha256 hash (pip --require-hashes installs nothing else);
  - every requirement of pyproject (the core list plus the lock's extras, markers evaluated for the image's
    Python on Linux x86_64) is satisfied by the pin of that name: a raised floor or a new dependency shows here;
  - no pin is orphaned: uv's "# via" names why each pin is there; every reason must be pyproject itself (for a
    name pyproject still requires) or another pin of the same file, so a dependency dropped from pyproject.toml
    cannot linger in the image;
  - packages shared by the CPU runtime and the export stage have the same version in both.

    python docker/lockcheck.py          # exit 1 and one line per problem when a lock is out of step
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK_DIR = ROOT / "docker" / "requirements"
PROJECT = "hrnet-pose (pyproject.toml)"
# lock file -> (extras it is compiled from, the Python of the image stage that installs it)
LOCKS: dict[str, tuple[tuple[str, ...], str]] = {
    "serve.txt": (("serve",), "3.11"),
    "export.txt": (("serve", "export"), "3.11"),
    "serve-gpu.txt": (("serve-gpu",), "3.12"),
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)")


@dataclass
class Pin:
    name: str
    version: Version
    hashes: int = 0
    via: set[str] = field(default_factory=set)


def parse_lock(text: str) -> dict[str, Pin]:
    """uv's requirements format: `name==version \\`, `--hash=sha256:...` lines, then `# via a` / `#   b` lines."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = PIN.match(line)
        if match:
            current = Pin(canonicalize_name(match.group(1)), Version(match.group(3)))
            pins[current.name] = current
            in_via = False
        elif line.startswith("--hash=sha256:") and current is not None:
            current.hashes += 1
        elif line.startswith("# via") and current is not None:
            in_via = True
            rest = line[len("# via"):].strip()
            if rest:
                current.via.add(rest)
        elif line.startswith("#") and in_via and current is not None and raw.startswith("    #   "):
            current.via.add(line.lstrip("#").strip())
        elif not line.startswith("#"):
            raise ValueError(f"unexpected line in a lock file: {raw!r}")
    return pins


def project_requirements(pyproject: dict, extras: tuple[str, ...], python: str) -> list[Requirement]:
    """The core dependencies plus those extras, keeping the ones whose markers hold in the image."""
    environment = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    project = pyproject["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    wanted = []
    for text in texts:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""}):
            wanted.append(requirement)
    return wanted


def lock_problems(lock_name: str, text: str, pyproject: dict) -> list[str]:
    extras, python = LOCKS[lock_name]
    pins = parse_lock(text)
    problems = [f"{lock_name}: {pin.name}=={pin.version} has no sha256 hash" for pin in pins.values() if not pin.hashes]
    required = project_requirements(pyproject, extras, python)
    for requirement in required:
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{lock_name}: pyproject requires {requirement} and the lock has no pin for it")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{lock_name}: pyproject requires {requirement}, the lock pins {pin.version}")
    direct = {canonicalize_name(r.name) for r in required}
    for pin in pins.values():
        reasons = {reason for reason in pin.via if reason != PROJECT}
        parents = {canonicalize_name(reason.split()[0]) for reason in reasons if not reason.startswith("-c ")}
        from_project = PROJECT in pin.via and pin.name in direct
        if not from_project and not (parents & set(pins)):
            problems.append(f"{lock_name}: {pin.name}=={pin.version} is orphaned (via {sorted(pin.via) or 'nothing'}"
                            "): nothing in pyproject.toml or in this lock needs it")
    return problems


def agreement_problems(locks: dict[str, dict[str, Pin]]) -> list[str]:
    """The export stage runs the same numpy/opencv/onnxruntime as the CPU runtime it exports for."""
    serve, export = locks.get("serve.txt", {}), locks.get("export.txt", {})
    return [f"serve.txt pins {name}=={serve[name].version}, export.txt {export[name].version}"
            for name in sorted(set(serve) & set(export)) if serve[name].version != export[name].version]


def problems(lock_dir: Path = LOCK_DIR, pyproject_path: Path = ROOT / "pyproject.toml") -> list[str]:
    pyproject = tomllib.loads(pyproject_path.read_text())
    found: list[str] = []
    parsed: dict[str, dict[str, Pin]] = {}
    for lock_name in LOCKS:
        path = lock_dir / lock_name
        if not path.exists():
            found.append(f"{lock_name} is missing: run make lock")
            continue
        text = path.read_text()
        parsed[lock_name] = parse_lock(text)
        found += lock_problems(lock_name, text, pyproject)
    return found + agreement_problems(parsed)


def main() -> int:
    found = problems()
    for problem in found:
        print(problem, file=sys.stderr)
    if found:
        print("the image locks are out of step with pyproject.toml: run make lock", file=sys.stderr)
        return 1
    print(f"{', '.join(LOCKS)}: in step with pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
