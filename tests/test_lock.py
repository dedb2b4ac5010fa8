"""The images' pinned dependencies (docker/requirements/*.txt): in step with pyproject.toml, installed by the
Dockerfiles with their hashes, torch only as the CPU build. Offline: nothing here asks PyPI what it has today."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest
import tomllib

from tests.helpers import ROOT

LOCK_DIR = ROOT / "docker" / "requirements"


def load_lockcheck():
    spec = importlib.util.spec_from_file_location("lockcheck", ROOT / "docker" / "lockcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["lockcheck"] = module
    spec.loader.exec_module(module)
    return module


lockcheck = load_lockcheck()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_committed_locks_are_in_step_with_pyproject() -> None:
    assert lockcheck.problems() == []


def test_every_pin_is_exact_and_hashed() -> None:
    for name in lockcheck.LOCKS:
        text = (LOCK_DIR / name).read_text()
        pins = lockcheck.parse_lock(text)
        assert len(pins) > 20, name
        requirement_lines = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
        assert all("==" in line and line.endswith(" \\") for line in requirement_lines), name
        assert all(pin.hashes for pin in pins.values()), name


def lock_with(name: str, edit) -> list[str]:
    return lockcheck.lock_problems(name, edit((LOCK_DIR / name).read_text()), PYPROJECT)


def test_a_raised_floor_in_pyproject_is_caught() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pyproject["project"]["dependencies"] = [re.sub(r"^numpy>=.*", "numpy>=99", d)
                                            for d in pyproject["project"]["dependencies"]]
    found = lockcheck.lock_problems("serve.txt", (LOCK_DIR / "serve.txt").read_text(), pyproject)
    assert any("numpy>=99" in problem and "the lock pins" in problem for problem in found), found


def test_a_new_dependency_in_pyproject_is_caught() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pyproject["project"]["optional-dependencies"]["export"].append("scipy>=1.10")
    found = lockcheck.lock_problems("export.txt", (LOCK_DIR / "export.txt").read_text(), pyproject)
    assert found == ["export.txt: pyproject requires scipy>=1.10 and the lock has no pin for it"]
    # an extra the lock is not made from does not count: the CPU runtime lock has no business with scipy
    assert lockcheck.lock_problems("serve.txt", (LOCK_DIR / "serve.txt").read_text(), pyproject) == []


def test_a_dependency_dropped_from_pyproject_is_an_orphan() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pyproject["project"]["dependencies"] = [d for d in pyproject["project"]["dependencies"]
                                            if not d.startswith("prometheus-client")]
    found = lockcheck.lock_problems("serve.txt", (LOCK_DIR / "serve.txt").read_text(), pyproject)
    assert len(found) == 1 and "prometheus-client" in found[0] and "orphaned" in found[0], found


def test_a_pin_whose_parent_left_the_lock_is_an_orphan() -> None:
    # drop uvicorn's block: its dependencies (h11, click, ...) stay pinned for nobody; pyproject also misses it
    found = lock_with("serve.txt", lambda text: re.sub(r"(?ms)^uvicorn==.*?(?=^\S)", "", text))
    assert any(problem.startswith("serve.txt: h11==") and "orphaned" in problem for problem in found), found
    assert any("uvicorn" in problem and "no pin" in problem for problem in found), found


def test_a_pin_without_hash_is_caught() -> None:
    found = lock_with("serve.txt", lambda text: re.sub(r"(?m)^(numpy==\S+) \\\n(    --hash=\S+( \\)?\n)+",
                                                       r"\1\n", text))
    assert any("numpy" in problem and "no sha256 hash" in problem for problem in found), found


def test_runtime_and_export_stage_pin_the_same_versions() -> None:
    serve = lockcheck.parse_lock((LOCK_DIR / "serve.txt").read_text())
    export = lockcheck.parse_lock((LOCK_DIR / "export.txt").read_text())
    assert set(serve) <= set(export)
    assert lockcheck.agreement_problems({"serve.txt": serve, "export.txt": export}) == []
    serve["numpy"].version = lockcheck.Version("1.0")
    assert lockcheck.agreement_problems({"serve.txt": serve, "export.txt": export})


def test_torch_is_the_cpu_build_and_only_in_the_export_lock() -> None:
    """The TORCH_VERSION trap is gone: the lock pins the +cpu build, which only the CPU wheel index has."""
    export = lockcheck.parse_lock((LOCK_DIR / "export.txt").read_text())
    assert str(export["torch"].version).endswith("+cpu"), export["torch"].version
    assert not any(name.startswith(("nvidia-", "triton")) for name in export), "CUDA wheels in the export lock"
    for runtime in ("serve.txt", "serve-gpu.txt"):
        assert "torch" not in lockcheck.parse_lock((LOCK_DIR / runtime).read_text()), runtime
    gpu = lockcheck.parse_lock((LOCK_DIR / "serve-gpu.txt").read_text())
    assert "onnxruntime" not in gpu and "onnxruntime-gpu" in gpu  # never both in one environment
    assert "onnxruntime-gpu" not in lockcheck.parse_lock((LOCK_DIR / "serve.txt").read_text())


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfiles_install_only_from_the_locks(flavour: str) -> None:
    text = (ROOT / "docker" / f"Dockerfile.{flavour}").read_text()
    assert "TORCH_VERSION" not in text and "ORT_GPU_VERSION" not in text  # no argument can unpin them
    installs = re.findall(r"pip install[^\n]*", text.replace("\\\n", " "))
    assert installs
    for install in installs:
        assert "--require-hashes" in install and re.search(r"-r /build/[\w-]+\.txt", install), install
    copied = set(re.findall(r"docker/requirements/([\w-]+\.txt)", text))
    assert copied == ({"export.txt", "serve-gpu.txt"} if flavour == "gpu" else {"export.txt", "serve.txt"})


def test_make_lock_compiles_each_lock_from_its_extras() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nlock:", 1)[1].split("\n\n", 1)[0]
    for name, (extras, python) in lockcheck.LOCKS.items():
        line = next(line for line in recipe.replace("\\\n", " ").splitlines() if f"$(LOCK_DIR)/{name}" in line
                    and "-o" in line)
        assert f"--python-version {python}" in line, line
        assert sorted(re.findall(r"--extra (\S+)", line)) == sorted(extras), line
    assert "$(VENV)/bin/uv pip compile pyproject.toml" in makefile and "--generate-hashes" in makefile
    assert "docker/lockcheck.py" in recipe
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(re.fullmatch(r"uv==[\d.]+", requirement) for requirement in dev)  # make lock's tool, pinned


def test_gpu_label_names_the_pinned_onnxruntime_gpu() -> None:
    label = re.search(r'io\.hrnet-pose\.onnxruntime-gpu="([^"]+)"', (ROOT / "docker" / "Dockerfile.gpu").read_text())
    pinned = lockcheck.parse_lock((LOCK_DIR / "serve-gpu.txt").read_text())["onnxruntime-gpu"].version
    assert label and label.group(1) == str(pinned)
    assert f"onnxruntime-gpu=={pinned}" in (LOCK_DIR / "gpu.in").read_text()
