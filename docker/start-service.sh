#!/bin/sh
# The images' command: the service, with the person detector when the model's folder carries one (detector.onnx
# beside model.onnx: an image built with the DETECTOR argument, a Kubernetes model image copied into /models, a
# KServe model in /mnt/models) and POSE_DETECTOR_PATH does not say otherwise. Arguments pass through to
# `python -m service`.
set -eu
if [ -z "${POSE_DETECTOR_PATH:-}" ]; then
    unset POSE_DETECTOR_PATH  # empty is "none", not a path
    detector="$(dirname "${POSE_MODEL_PATH:-/models/model.onnx}")/detector.onnx"
    if [ -e "$detector" ]; then
        export POSE_DETECTOR_PATH="$detector"
    fi
fi
exec python -m service "$@"
