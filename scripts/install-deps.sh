#!/usr/bin/env bash
# Installs everything loco needs to build, test and run on Debian 12. Idempotent: packages
# already present are left alone, and when none is missing nothing is run with privileges.
# As root it runs apt-get directly; otherwise through sudo. No downloads outside Debian's
# archive.
set -euo pipefail

packages=(
  cmake ninja-build g++ make pkg-config
  libopenmpi-dev openmpi-bin           # MPI: CPU collectives and the launcher
  nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev catch2
  libopenblas-dev                      # sgemm for the CPU backend
  libxxhash-dev                        # tests cross-check our XXH64 (checkpoint checksums)
  bible-kjv                            # the corpus's source (data/ already holds the text)
  dict-jargon                          # the second text of scripts/continual-demo.sh
  gnuplot-nox                          # plots in scripts/compare.sh and scripts/sweep.py
  iproute2 procps                      # scripts/netns-cluster.sh (ip, tc) and its test (pgrep)
  python3                              # the emulator's kernel rewrite and test checks
  libsentencepiece-dev                 # subword tokenizers (loco tokenize --tokenizer bpe)
  python3-sentencepiece                # tests: exported tokenizer.model read by the reference
)
if [[ "${LOCO_WITH_TORCH:-0}" == 1 ]]; then
  packages+=(python3-torch)            # only for scripts/bench-cpu.sh's PyTorch reference
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

# Root needs nothing more; anyone else asks sudo for this step only (the build and the runs
# never need privileges).
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-deps: missing Debian packages: ${missing[*]}" >&2
    echo "install-deps: installing them needs root, and sudo is not available; as root run:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  SUDO="sudo"
  echo "install-deps: asking sudo to install the missing packages"
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
