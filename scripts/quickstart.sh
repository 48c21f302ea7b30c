#!/usr/bin/env bash
# The embedded default: install, build, and train the tiny Llama on the bundled King James
# Bible corpus on the CPU. Extra arguments go to `loco train` (e.g. --set training.steps=50).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build/loco train configs/tiny.json --out runs/quickstart "$@"
