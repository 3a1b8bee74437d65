#!/usr/bin/env bash
# The wheel carries the presets and the embedded data: build it, install it into a fresh venv (torch from the
# exact CPU pin first), and train and inspect from that venv, outside the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" . \
    || .venv/bin/python -m pip wheel --quiet --no-deps -w "$WORK/dist" .
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet torch==2.13.0   # the exact pin: the CPU build from the local file
"$WORK/venv/bin/pip" install --quiet "$WORK"/dist/elbolab-*.whl
cd "$WORK"   # nothing of the source tree on the path
"$WORK/venv/bin/python" -c "import elbolab, sys; assert 'site-packages' in elbolab.__file__, elbolab.__file__"
"$WORK/venv/bin/elbolab" data info mnist-embedded
"$WORK/venv/bin/elbolab" train ddpm-tiny --steps 2 --out "$WORK/run"
test -f "$WORK/run/model.safetensors" && test -f "$WORK/run/run.json"
echo "wheel smoke test: ok ($(ls "$WORK"/dist))"
