#!/usr/bin/env bash
# Container smoke test (`make test-image`): builds the CPU image and checks the running container as docker
# compose runs it (read-only root, tmpfs /tmp, no capabilities, no-new-privileges, the compose file's
# stop_grace_period as --stop-timeout, port 8000 on 127.0.0.1):
#   1. ready (/readyz 200) within READY_WITHIN_S;      2. the README's curl (/v1/pose) answers 17 keypoints;
#   3. /v1/model, /v2/models/NAME and /metrics name the model the image was built with (/models/NAME.onnx);
#   4. the image's HEALTHCHECK turns healthy;           5. `docker stop` lets an in-flight request finish (exit 0).
# Also: user 10001, no torch and no training code (model_export) in the runtime, no telemetry warning in the log.
# Without Docker, a daemon, BuildKit or the base images it prints one "SKIPPED: <why>" line and exits 0; any failed
# check prints "FAILED: <what>", the container's log, and exits 1.
#
#   make test-image
#   DOCKER=/usr/bin/docker BUILD_ARGS="--network host --build-arg PIP_INDEX_URL=..." bash docker/test-image.sh
# Environment: DOCKER (the CLI), IMAGE (tag to build), PORT (host port), BUILD_ARGS (more `docker build` args),
# SKIP_BUILD=1 (test IMAGE as it is), READY_WITHIN_S (default 120), STOP_TIMEOUT_S (instead of compose's).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER="${DOCKER:-docker}"
IMAGE="${IMAGE:-hrnet-pose:test-image}"
PORT="${PORT:-18000}"
READY_WITHIN_S="${READY_WITHIN_S:-120}"
HEALTHY_WITHIN_S=90
NAME="hrnet-pose-test-image-$$"
WORK="$(mktemp -d)"
BASE_URL="http://127.0.0.1:$PORT"

skip() { echo "SKIPPED: $*"; exit 0; }
step() { echo "test-image: $*"; }
fail() {
    echo "FAILED: $*" >&2
    "$DOCKER" logs --tail 60 "$NAME" >&2 2>&1 || true
    exit 1
}
cleanup() { "$DOCKER" rm -f "$NAME" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

# -- can this host run it at all? -------------------------------------------------------------------------------
command -v "$DOCKER" >/dev/null 2>&1 || skip "no docker CLI ($DOCKER) on this host"
"$DOCKER" info >/dev/null 2>&1 || skip "no Docker daemon answers ('$DOCKER info' failed)"
command -v curl >/dev/null 2>&1 || skip "no curl on this host (the checks are the README's curl commands)"
# The Dockerfile's grace period, published port and hardening are compose's: read them from docker-compose.yml.
# STOP_TIMEOUT_S overrides it (e.g. 10, Docker's default, shows what the grace period is for).
GRACE_S="${STOP_TIMEOUT_S:-$(sed -n 's/^ *stop_grace_period: *\([0-9]*\)s *$/\1/p' docker-compose.yml | head -n 1)}"
[ -n "$GRACE_S" ] || fail "docker-compose.yml has no stop_grace_period for the pose service"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    # BuildKit (cache and secret mounts): Docker 23+ builds with buildx; older clients with DOCKER_BUILDKIT=1.
    client="$("$DOCKER" version --format '{{.Client.Version}}' 2>/dev/null || echo 0)"
    if [ "${client%%.*}" -ge 23 ] 2>/dev/null && ! "$DOCKER" buildx version >/dev/null 2>&1; then
        skip "docker $client has no buildx plugin, so no BuildKit (install docker-buildx, or DOCKER=<a 20.10 CLI>)"
    fi
    export DOCKER_BUILDKIT=1
    dockerfile=docker/Dockerfile.cpu
    python_image="$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$dockerfile")"
    if ! "$DOCKER" image inspect "$python_image" >/dev/null 2>&1 && ! "$DOCKER" pull -q "$python_image" >/dev/null 2>&1; then
        skip "base image $python_image is neither local nor pullable (no registry reachable?)"
    fi
    step "building $IMAGE"
    started=$(date +%s)
    # shellcheck disable=SC2086  # BUILD_ARGS is a list of arguments
    "$DOCKER" build -f "$dockerfile" -t "$IMAGE" ${BUILD_ARGS:-} . || fail "docker build failed"
    step "built in $(( $(date +%s) - started )) s"
fi

# -- run it as compose does ---------------------------------------------------------------------------------------
step "image size $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
started=$(date +%s)
"$DOCKER" run -d --name "$NAME" --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges:true \
    --stop-timeout "$GRACE_S" -p "127.0.0.1:$PORT:8000" "$IMAGE" >/dev/null || fail "docker run failed"

until curl -fsS -o /dev/null "$BASE_URL/readyz" 2>/dev/null; do
    [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$NAME")" = true ] || fail "the container exited before ready"
    [ $(( $(date +%s) - started )) -lt "$READY_WITHIN_S" ] || fail "not ready within $READY_WITHIN_S s"
    sleep 0.5
done
step "1. ready after $(( $(date +%s) - started )) s (bound $READY_WITHIN_S s)"

# Python inside the container writes the test image and reads the answers: the host needs only docker and curl.
in_container() { "$DOCKER" exec -i "$NAME" python -c "$1"; }
in_container "import sys, cv2, numpy as np
rng = np.random.default_rng(0)
sys.stdout.buffer.write(cv2.imencode('.jpg', rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))[1].tobytes())" \
    > "$WORK/person.jpg"
curl -fsS -F image=@"$WORK/person.jpg" -F 'boxes=[[10, 20, 120, 260]]' "$BASE_URL/v1/pose" > "$WORK/pose.json" \
    || fail "the README's curl /v1/pose failed"
in_container "import json, sys
persons = json.load(sys.stdin)['persons']
assert len(persons) == 1 and len(persons[0]['keypoints']) == 17, persons" < "$WORK/pose.json" \
    || fail "/v1/pose did not answer one person with 17 keypoints: $(head -c 300 "$WORK/pose.json")"
step "2. README curl /v1/pose: one person, 17 keypoints"

model_name="$(curl -fsS "$BASE_URL/v1/model" | in_container "import json, sys; print(json.load(sys.stdin)['name'])")"
"$DOCKER" exec "$NAME" test -f "/models/$model_name.onnx" || fail "/v1/model names $model_name, not a file in /models"
[ "$model_name" != model ] || fail "the model is still called 'model'"
curl -fsS -o /dev/null "$BASE_URL/v2/models/$model_name" || fail "/v2/models/$model_name is not served"
curl -fsS "$BASE_URL/metrics" > "$WORK/metrics.txt" || fail "/metrics failed"
grep -q "^pose_model_info{.*model=\"$model_name\"" "$WORK/metrics.txt" || fail "pose_model_info does not name $model_name"
grep -q '^pose_requests_total{' "$WORK/metrics.txt" || fail "/metrics has no pose_requests_total"
step "3. /v1/model, /v2/models/$model_name and /metrics name /models/$model_name.onnx"

until [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$NAME")" = healthy ]; do
    [ $(( $(date +%s) - started )) -lt "$HEALTHY_WITHIN_S" ] || fail "HEALTHCHECK not healthy within $HEALTHY_WITHIN_S s"
    sleep 1
done
step "4. HEALTHCHECK healthy after $(( $(date +%s) - started )) s"

[ "$("$DOCKER" exec "$NAME" id -u)" = 10001 ] || fail "not running as uid 10001"
in_container "import importlib.util as u; assert not u.find_spec('torch') and not u.find_spec('model_export')" \
    || fail "torch or model_export is importable in the runtime image"
if "$DOCKER" logs "$NAME" 2>&1 | grep -q "Failed to persist telemetry"; then fail "onnxruntime cannot write HOME"; fi

# -- graceful stop: a 40-box request in flight when `docker stop` sends SIGTERM ---------------------------------------
boxes="[$(for i in $(seq 40); do printf '[%d, 10, %d, 400],' $(( i * 10 )) $(( i * 10 + 200 )); done | sed 's/,$//')]"
curl -sS -o "$WORK/inflight.json" -w '%{http_code}' -F image=@"$WORK/person.jpg" -F "boxes=$boxes" \
    "$BASE_URL/v1/pose" > "$WORK/inflight.status" 2>"$WORK/inflight.err" &
request=$!
sleep 0.3
stop_started=$(date +%s)
"$DOCKER" stop "$NAME" >/dev/null
wait "$request" || true
exit_code="$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$NAME")"
status="$(cat "$WORK/inflight.status")"
[ "$status" = 200 ] || fail "the in-flight request got HTTP '$status' ($(cat "$WORK/inflight.err")) during docker stop"
[ "$exit_code" = 0 ] || fail "docker stop ended the container with exit code $exit_code (137: killed after the grace period)"
step "5. docker stop: in-flight 40-box request answered 200, exit 0 after $(( $(date +%s) - stop_started )) s (grace ${GRACE_S} s)"
echo "PASSED: $IMAGE"
