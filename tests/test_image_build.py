"""The image build's logic, run without Docker: the labels each build-argument case renders, the model and
detector file names docker/export-models.sh writes, the detector pickup of docker/start-service.sh, the CA
bundle / index handling of docker/build-env.sh, what the runtime stage holds, and docker/test-image.sh's skips.
(docker/test-image.sh builds and runs the real image where Docker is.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

DOCKER_DIR = ROOT / "docker"
DOCKERFILES = {"cpu": DOCKER_DIR / "Dockerfile.cpu", "gpu": DOCKER_DIR / "Dockerfile.gpu"}


# -- labels: Docker's ARG/LABEL substitution (${V}, ${V:-word}, ${V:+word}, nested), rendered per case ----------------
def expand(word: str, env: dict[str, str]) -> str:
    """Docker's shell-lexer substitution for the forms the Dockerfiles use; an unset variable is empty."""
    out, i = [], 0
    while i < len(word):
        if word.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                depth += {"{": 1, "}": -1}.get(word[j], 0) if word[j - 1] == "$" or word[j] == "}" else 0
                j += 1
            body = word[i + 2:j - 1]
            match = re.fullmatch(r"(\w+)(?::([-+])(.*))?", body, re.DOTALL)
            assert match, f"unsupported substitution ${{{body}}}"
            name, op, alternative = match.groups()
            value = env.get(name, "")
            if op == "-":
                value = value or expand(alternative, env)
            elif op == "+":
                value = expand(alternative, env) if value else ""
            out.append(value)
            i = j
        else:
            out.append(word[i])
            i += 1
    return "".join(out)


def stage_labels(dockerfile: Path, stage: str, build_args: dict[str, str]) -> dict[str, str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    start = next(i for i, line in enumerate(lines) if re.match(rf"FROM \S+ AS {stage}$", line))
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    for line in lines[start + 1:]:
        if line.startswith("FROM "):
            break
        if match := re.fullmatch(r'ARG (\w+)(?:="?(.*?)"?)?', line):
            name, default = match.groups()
            env[name] = build_args[name] if name in build_args else expand(default or "", env)
        elif line.startswith("LABEL "):
            labels |= {key: expand(value, env) for key, value in re.findall(r'([\w.-]+)="((?:[^"\\]|\\.)*)"', line)}
    return labels


# What BuildKit rendered for these four cases (Docker 20.10, built-in Dockerfile frontend, December 2026).
LABEL_CASES = {
    "weights": ({"WEIGHTS": "hrnet_w32_coco_256x192"}, "official weights hrnet_w32_coco_256x192", "none"),
    "checkpoint": ({"CHECKPOINT": "p.pth"}, "checkpoint p.pth", "p.pth"),
    "neither": ({}, "UNTRAINED random-init", "none"),
    "both": ({"WEIGHTS": "w", "CHECKPOINT": "c.pth"}, "official weights w from checkpoint c.pth", "c.pth"),
}
LABELLED_STAGES = [("cpu", "model"), ("cpu", "runtime"), ("gpu", "runtime")]


@pytest.mark.parametrize("case", LABEL_CASES)
@pytest.mark.parametrize(("flavour", "stage"), LABELLED_STAGES)
def test_model_labels_render_without_stray_spaces(flavour: str, stage: str, case: str) -> None:
    build_args, weights, checkpoint = LABEL_CASES[case]
    labels = stage_labels(DOCKERFILES[flavour], stage, build_args)
    assert labels["io.hrnet-pose.model.weights"] == weights
    assert labels["io.hrnet-pose.model.checkpoint"] == checkpoint
    assert labels["io.hrnet-pose.detector"] == "none"
    for key, value in labels.items():
        assert value == value.strip() and "  " not in value, (key, value)


def test_detector_label() -> None:
    labels = stage_labels(DOCKERFILES["cpu"], "runtime", {"DETECTOR": "yolox_s"})
    assert labels["io.hrnet-pose.detector"] == "yolox_s"


def test_the_substitution_helper_follows_docker() -> None:
    env = {"A": "a", "E": ""}
    assert expand("${A:+x ${A}}|${E:+no}|${E:-d ${A}}|${U:-u}|${A}", env) == "x a||d a|u|a"


# -- export-models.sh: the files are named after the weights -----------------------------------------------------------
FAKE_PYTHON = """#!/bin/sh
# stands in for `python -m model_export ...`: logs the call, writes --output and its card
echo "$*" >> "$CALLS"
while [ $# -gt 0 ]; do
    if [ "$1" = --output ]; then : > "$2"; : > "${2%.onnx}.json"; fi
    shift
done
"""


def run_script(script: str, tmp_path: Path, env: dict[str, str], fake: str = FAKE_PYTHON,
               args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(fake)
    (bin_dir / "python").chmod(0o755)
    base = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls"),
            "MODELS_DIR": str(tmp_path / "models"), "CHECKPOINT_DIR": "/checkpoints"}
    return subprocess.run(["sh", str(DOCKER_DIR / script), *args], env=base | env, capture_output=True, text=True,
                          timeout=30)


EXPORT_CASES = {
    "weights": ({"WEIGHTS": "hrnet_w48_coco_256x192"}, "hrnet_w48_coco_256x192",
                "-m model_export fetch hrnet_w48_coco_256x192 --no-progress"),
    "checkpoint": ({"CHECKPOINT": "pose_hrnet_w48_384x288.pth", "MODEL_ARCH": "w48_384x288"},
                   "pose_hrnet_w48_384x288",
                   "-m model_export export --arch w48_384x288 --checkpoint /checkpoints/pose_hrnet_w48_384x288.pth"),
    "neither": ({"MODEL_ARCH": "w32_384x288"}, "hrnet_w32_384x288",
                "-m model_export export --arch w32_384x288 --random-init --seed 0"),
    "both": ({"WEIGHTS": "hrnet_w32_coco_256x192", "CHECKPOINT": "x.pth"}, "hrnet_w32_coco_256x192",
             "-m model_export fetch hrnet_w32_coco_256x192 --from-file /checkpoints/x.pth --no-progress"),
}


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_the_model_file_is_named_after_its_weights(tmp_path: Path, case: str) -> None:
    env, name, call = EXPORT_CASES[case]
    result = run_script("export-models.sh", tmp_path, env)
    assert result.returncode == 0, result.stderr
    models = tmp_path / "models"
    assert (tmp_path / "calls").read_text() == f"{call} --output {models}/{name}.onnx\n"
    assert sorted(p.name for p in models.iterdir()) == sorted([f"{name}.onnx", f"{name}.json", "model.onnx",
                                                               "model.json"])
    for suffix in (".onnx", ".json"):  # relative aliases: they survive `cp -R` into another folder
        assert os.readlink(models / f"model{suffix}") == f"{name}{suffix}"
    assert ("UNTRAINED" in result.stdout) == (case == "neither")


@pytest.mark.parametrize("detector_checkpoint", ["", "yolox_s.pth"])
def test_the_detector_is_exported_beside_the_model(tmp_path: Path, detector_checkpoint: str) -> None:
    env = {"WEIGHTS": "hrnet_w32_coco_256x192", "DETECTOR": "yolox_s", "DETECTOR_CHECKPOINT": detector_checkpoint}
    result = run_script("export-models.sh", tmp_path, env)
    assert result.returncode == 0, result.stderr
    models = tmp_path / "models"
    detector_call = (tmp_path / "calls").read_text().splitlines()[1]
    from_file = f" --from-file /checkpoints/{detector_checkpoint}" if detector_checkpoint else ""
    assert detector_call == f"-m model_export fetch yolox_s{from_file} --no-progress --output {models}/yolox_s.onnx"
    assert os.readlink(models / "detector.onnx") == "yolox_s.onnx"
    assert os.readlink(models / "detector.json") == "yolox_s.json"


@pytest.mark.parametrize("env", [{"DETECTOR_CHECKPOINT": "d.pth"}, {"WEIGHTS": "model"},
                                 {"WEIGHTS": "w", "DETECTOR": "w"}, {"CHECKPOINT": "sub/../model.pth"}])
def test_names_that_would_clash_are_refused(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_script("export-models.sh", tmp_path, env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert not (tmp_path / "models" / "detector.onnx").exists()


# -- start-service.sh: the detector is served when it is there --------------------------------------------------------
ECHO_PYTHON = '#!/bin/sh\necho "detector=${POSE_DETECTOR_PATH-unset} args=$*"\n'


@pytest.mark.parametrize(("has_detector", "given", "expected"), [
    (True, None, "detector={dir}/detector.onnx"), (False, None, "detector=unset"),
    (True, "/elsewhere/d.onnx", "detector=/elsewhere/d.onnx"), (False, "", "detector=unset")])
def test_start_service_picks_up_the_detector(tmp_path: Path, has_detector: bool, given: str | None,
                                             expected: str) -> None:
    models = tmp_path / "mnt-models"
    models.mkdir()
    if has_detector:
        (models / "detector.onnx").write_text("")
    env = {"POSE_MODEL_PATH": str(models / "model.onnx")} | ({} if given is None else {"POSE_DETECTOR_PATH": given})
    result = run_script("start-service.sh", tmp_path, env, fake=ECHO_PYTHON, args=("--port", "9"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected.format(dir=models) + " args=-m service --port 9"


# -- build-env.sh: the CA bundle secret and the package index ---------------------------------------------------------
def build_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    result = subprocess.run(["sh", str(DOCKER_DIR / "build-env.sh"), "env"], capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"], **env}, timeout=30)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_build_env_trusts_the_ca_bundle_secret_only_when_given(tmp_path: Path) -> None:
    bundle = tmp_path / "ca_bundle"
    absent = build_env(tmp_path, {"CA_BUNDLE_SECRET": str(bundle), "PIP_INDEX_URL": ""})
    assert not {"PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL"} & set(absent)
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    given = build_env(tmp_path, {"CA_BUNDLE_SECRET": str(bundle), "PIP_INDEX_URL": "https://pypi.example/simple"})
    assert given["PIP_CERT"] == given["SSL_CERT_FILE"] == given["REQUESTS_CA_BUNDLE"] == str(bundle)
    assert given["PIP_INDEX_URL"] == "https://pypi.example/simple"


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_downloads_see_the_secret_and_the_index_and_no_layer_keeps_them(flavour: str) -> None:
    text = DOCKERFILES[flavour].read_text().replace("\\\n", " ")
    for line in (line for line in text.splitlines() if "pip install" in line or "export-models.sh" in line):
        if line.startswith("RUN"):
            assert "--mount=type=secret,id=ca_bundle" in line and "build-env.sh" in line, line
    assert text.count('ARG PIP_INDEX_URL=""') == 2  # the export and the build stage
    assert "ca_bundle" not in "".join(re.findall(r"^(?:COPY|ADD|ENV) .*$", text, re.MULTILINE))


# -- the runtime stage: the service only -----------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_runtime_holds_no_training_code(flavour: str) -> None:
    text = DOCKERFILES[flavour].read_text().replace("\\\n", " ")
    stages = re.split(r"(?m)^FROM ", text)
    runtime = next(s for s in stages if re.match(r"\S+ AS runtime\b", s))
    export = next(s for s in stages if re.match(r"\S+ AS export\b", s))
    copied = re.findall(r"^COPY (?!--from)(\S+)", runtime, re.MULTILINE)
    assert sorted(copied) == ["docker/start-service.sh", "posecore/", "service/"], copied
    assert "COPY model_export/" in export and "COPY service/" not in export
    assert 'CMD ["/opt/app/start-service.sh"]' in runtime and "PYTHONPATH=/opt/app" in runtime
    assert "HOME=/tmp" in runtime and "--home-dir /tmp" in runtime  # onnxruntime's telemetry id has a home


# -- test-image.sh: says why it cannot run, never fails silently ------------------------------------------------------
def test_image_test_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(DOCKER_DIR / "test-image.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("docker", "why"), [("/nonexistent/docker", "no docker CLI"),
                                             ("false", "no Docker daemon answers")])
def test_image_test_skips_with_the_reason(docker: str, why: str) -> None:
    result = subprocess.run(["bash", str(DOCKER_DIR / "test-image.sh")], capture_output=True, text=True,
                            env={**os.environ, "DOCKER": docker}, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("SKIPPED: ") and why in result.stdout, result.stdout


def test_image_test_runs_the_container_with_the_compose_hardening() -> None:
    yaml = pytest.importorskip("yaml")
    pose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["pose"]
    script = (DOCKER_DIR / "test-image.sh").read_text()
    assert pose["read_only"] is True and "--read-only" in script
    assert pose["tmpfs"] == ["/tmp"] and "--tmpfs /tmp" in script
    assert pose["cap_drop"] == ["ALL"] and "--cap-drop ALL" in script
    assert pose["security_opt"] == ["no-new-privileges:true"] and "--security-opt no-new-privileges:true" in script
    assert '--stop-timeout "$GRACE_S"' in script and "stop_grace_period" in script
    makefile = (ROOT / "Makefile").read_text()
    assert "make test-image" in script and "\ntest-image:\n\tbash docker/test-image.sh" in makefile
