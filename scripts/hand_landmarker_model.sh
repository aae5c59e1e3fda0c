#!/usr/bin/env bash
# Build MediaPipe's hand-landmarker model bundle (.task) from a registry wheel, once, at set-up time, so that
# `pela data curate-videos` never downloads anything at run time.
#
# mediapipe 1.x wheels hold no model files; the mediapipe 0.10.14 wheel holds the two TFLite models of the hand
# landmarker (Apache-2.0). A .task bundle is a zip of them named hand_detector.tflite and hand_landmarks_detector.tflite.
# Usage: scripts/hand_landmarker_model.sh PYTHON TARGET (idempotent: returns at once when TARGET exists).
set -euo pipefail
PYTHON=$1
TARGET=$2
[ -f "$TARGET" ] && exit 0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    "mediapipe==0.10.14" -d "$WORK"
mkdir -p "$(dirname "$TARGET")"
"$PYTHON" - "$WORK" "$TARGET" <<'PY'
import pathlib, sys, zipfile

work, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("mediapipe-0.10.14-*.whl"))
members = {
    "mediapipe/modules/palm_detection/palm_detection_full.tflite": "hand_detector.tflite",
    "mediapipe/modules/hand_landmark/hand_landmark_full.tflite": "hand_landmarks_detector.tflite",
}
partial = target.with_suffix(".partial")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as dst:
    for member, name in members.items():
        dst.writestr(name, src.read(member))
partial.replace(target)
print(f"hand landmarker model written to {target} (from {wheel.name})")
PY
