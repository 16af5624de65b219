#!/usr/bin/env bash
# The whole loop on the bundled examples, as a new user runs it: capture -> build -> replay -> compare.
# Needs Python 3.11 (for the local Debian bookworm base), a Docker Engine, and root for debootstrap
# the first time (`reprobox base`). No container registry is needed.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${REPROBOX_VENV:-$repo/.venv}"

[ -x "$venv/bin/reprobox" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -e "$repo"; }
reprobox() { "$venv/bin/reprobox" "$@"; }

reprobox base                   # a local Debian base image with this Python; skipped if present

# The experiments have their own environment, as a research project would: just numpy.
work="$(mktemp -d)"
python3 -m venv "$work/project-venv" && "$work/project-venv/bin/pip" install -q numpy
export PATH="$work/project-venv/bin:$PATH"   # `python` below is the project's interpreter
for example in numpy-sgd clock-noise; do
  echo "=== $example: capture -> build -> replay -> compare"
  cp -r "$repo/examples/$example" "$work/$example"
  cd "$work/$example"
  git init -q && git add . && git -c user.name=demo -c user.email=demo@localhost commit -qm "$example"
  reprobox capture --seed 42 -- python train.py
  set +e; reprobox run; code=$?; set -e
  echo "=== $example: reprobox run exited with $code"
  expected=0; [ "$example" = clock-noise ] && expected=3
  [ "$code" = "$expected" ] || { echo "expected exit $expected for $example" >&2; exit 1; }
done
# Is the original's loss noise? Replay numpy-sgd from three other seeds and look at the spread.
echo "=== numpy-sgd: a seed sweep (reprobox replay --seeds 1-3)"
cd "$work/numpy-sgd" && reprobox replay --seeds 1-3
echo "=== demo done: numpy-sgd reproduced (0), clock-noise did not (3), as expected; bundles in $work"
