#!/usr/bin/env bash
# Installs each peer group fetched by benchmarks/peers/fetch_wheels.py (.wheels/peers/<group>/*.whl) into its own
# folder /tmp/peers/<group>, offline and with --no-deps (tunix pins safetensors<0.8 and the image has 0.8.0; the
# MaxText and tunix groups hold only what their import path needs). The benchmarks put /tmp/peers/<group> on
# PYTHONPATH of that peer's subprocess alone, so the groups never mix with each other or with r1jax's process.
#
#   bash benchmarks/peers/install.sh            # every group present under .wheels/peers
#   bash benchmarks/peers/install.sh trl        # one group
#
# PEERS_SITE overrides /tmp/peers. Exits non-zero if an install fails; a group with no wheels is skipped.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
site="${PEERS_SITE:-/tmp/peers}"
groups=("$@")
if [ ${#groups[@]} -eq 0 ]; then
  for d in "$root"/.wheels/peers/*/; do [ -d "$d" ] && groups+=("$(basename "$d")"); done
fi
for g in "${groups[@]}"; do
  wheels=("$root"/.wheels/peers/"$g"/*.whl)
  if [ ! -e "${wheels[0]}" ]; then echo "peers: no wheels for $g, skipped"; continue; fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site/$g" "${wheels[@]}"
  if [ "$g" = maxtext ]; then
    # tokamax imports get_kernel_stats_tool from xprof (a 30 MiB profiler wheel) at import time; training never
    # calls it. A stub that fails loudly if it is ever called stands in for it.
    mkdir -p "$site/$g/xprof/cli"
    : > "$site/$g/xprof/__init__.py"
    : > "$site/$g/xprof/cli/__init__.py"
    cat > "$site/$g/xprof/cli/tools.py" <<'EOF'
"""Stub written by benchmarks/peers/install.sh: the xprof wheel does not travel to the device."""


def get_kernel_stats_tool(*args, **kwargs):
    raise NotImplementedError("xprof is a stub on this machine (benchmarks/peers/install.sh)")
EOF
  fi
  echo "peers: $g -> $site/$g (${#wheels[@]} wheels)"
done
