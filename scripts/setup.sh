#!/usr/bin/env bash
# One-time (and idempotent) set-up: system packages where we may install them, a virtual environment
# in .venv with torch/torchvision builds that run on a CPU, and ARBench itself (editable).
#   scripts/setup.sh demo   -> what `arbench demo` needs
#   scripts/setup.sh test   -> that, plus the test tools (PostgreSQL server, Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-demo}"
PY="${PYTHON:-python3}"

system_packages=(espeak-ng sox bubblewrap)  # bubblewrap: the submission sandbox (harness/isolation.py)
[ "$mode" = test ] && system_packages+=(postgresql chromium)
missing=()
for pkg in "${system_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: missing system packages ${missing[*]} (install them with your package manager);" \
         "the parts that need them will say so or skip." >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.arbench-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-$mode"
if [ ! -f "$stamp" ] || ! grep -qx -- "$want" "$stamp"; then
  extras=""
  [ "$mode" = test ] && extras="[test]"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # the filter never fails, so pipefail stops here exactly when pip does (and no stamp is written)
  .venv/bin/python -m pip install -q -c constraints.txt -e ".$extras" 2>&1 \
    | { grep -v -e '^WARNING: Location' -e 'is ignored' || true; }
  .venv/bin/python -c "import torch, torchvision, harness" >/dev/null
  echo "$want" >> "$stamp"
fi
