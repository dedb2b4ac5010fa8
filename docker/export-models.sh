#!/bin/sh
# The export stage's model step: writes /models/NAME.onnx + NAME.json (the model card) named after the weights,
# so that /v1/model, /v2/models/NAME and pose_model_info{model=...} say what is served, plus the stable aliases
# model.onnx / model.json (symlinks) that POSE_MODEL_PATH, compose and the Kubernetes ConfigMap point at.
# With DETECTOR, the person detector likewise: /models/DETECTOR.onnx + card, alias detector.onnx / .json.
#
# Inputs (the Dockerfile's build arguments, as environment variables):
#   WEIGHTS              registry name (`python -m model_export fetch --list`): official weights, sha256-verified
#   CHECKPOINT           a file in docker/checkpoints/ (mounted at $CHECKPOINT_DIR): with WEIGHTS, verified
#                        against that registry entry instead of downloaded; alone, exported with MODEL_ARCH
#   neither              an UNTRAINED random-init export of MODEL_ARCH (seed EXPORT_SEED)
#   DETECTOR             a person-detector registry name; DETECTOR_CHECKPOINT: its file in docker/checkpoints/
#   WEIGHTS_MIRROR       a mirror of the weights' host (POSE_WEIGHTS_MIRROR)
# NAME: WEIGHTS, else CHECKPOINT's file name without its extension, else hrnet_MODEL_ARCH (as `make model`).
set -eu
MODELS_DIR="${MODELS_DIR:-/models}"
CHECKPOINT_DIR="${CHECKPOINT_DIR:-/checkpoints}"
MODEL_ARCH="${MODEL_ARCH:-w32_256x192}"
WEIGHTS="${WEIGHTS:-}"
CHECKPOINT="${CHECKPOINT:-}"
DETECTOR="${DETECTOR:-}"
DETECTOR_CHECKPOINT="${DETECTOR_CHECKPOINT:-}"

model_name() {
    if [ -n "$WEIGHTS" ]; then
        echo "$WEIGHTS"
    elif [ -n "$CHECKPOINT" ]; then
        base="$(basename "$CHECKPOINT")"
        echo "${base%.*}"
    else
        echo "hrnet_${MODEL_ARCH}"
    fi
}

# alias KIND NAME: KIND.onnx -> NAME.onnx and KIND.json -> NAME.json, relative, so a copy of the folder keeps them
alias_files() {
    if [ "$1" != "$2" ]; then
        ln -sfn "$2.onnx" "$MODELS_DIR/$1.onnx"
        ln -sfn "$2.json" "$MODELS_DIR/$1.json"
    fi
}

mkdir -p "$MODELS_DIR"
name="$(model_name)"
case "$name" in
    model|detector|*/*|"") echo "export-models: '$name' cannot name a model file" >&2; exit 2 ;;
esac
output="$MODELS_DIR/$name.onnx"
if [ -n "$WEIGHTS" ] && [ -n "$CHECKPOINT" ]; then
    python -m model_export fetch "$WEIGHTS" --from-file "$CHECKPOINT_DIR/$CHECKPOINT" --no-progress --output "$output"
elif [ -n "$WEIGHTS" ]; then
    POSE_WEIGHTS_MIRROR="${WEIGHTS_MIRROR:-}" python -m model_export fetch "$WEIGHTS" --no-progress --output "$output"
elif [ -n "$CHECKPOINT" ]; then
    python -m model_export export --arch "$MODEL_ARCH" --checkpoint "$CHECKPOINT_DIR/$CHECKPOINT" --output "$output"
else
    echo "WARNING: no WEIGHTS or CHECKPOINT build arg: exporting an UNTRAINED random-init model"
    python -m model_export export --arch "$MODEL_ARCH" --random-init --seed "${EXPORT_SEED:-0}" --output "$output"
fi
alias_files model "$name"

if [ -n "$DETECTOR_CHECKPOINT" ] && [ -z "$DETECTOR" ]; then
    echo "export-models: DETECTOR_CHECKPOINT needs DETECTOR (the registry entry it is verified against)" >&2
    exit 2
fi
if [ -n "$DETECTOR" ]; then
    case "$DETECTOR" in
        model|detector|"$name"|*/*) echo "export-models: '$DETECTOR' cannot name the detector file" >&2; exit 2 ;;
    esac
    if [ -n "$DETECTOR_CHECKPOINT" ]; then
        python -m model_export fetch "$DETECTOR" --from-file "$CHECKPOINT_DIR/$DETECTOR_CHECKPOINT" --no-progress \
            --output "$MODELS_DIR/$DETECTOR.onnx"
    else
        POSE_WEIGHTS_MIRROR="${WEIGHTS_MIRROR:-}" python -m model_export fetch "$DETECTOR" --no-progress \
            --output "$MODELS_DIR/$DETECTOR.onnx"
    fi
    alias_files detector "$DETECTOR"
fi
ls -l "$MODELS_DIR"
