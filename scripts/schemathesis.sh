#!/usr/bin/env bash
# Install schemathesis (pinned) into a venv in the cache, outside the repo,
# once; print the path of its executable. Used by scripts/test.sh for the
# API fuzz test (crates/banger-cli/tests/api_fuzz.rs).
set -euo pipefail
version=4.32.5
cache="${XDG_CACHE_HOME:-$HOME/.cache}/banger"
venv="$cache/schemathesis-$version"
if [ ! -x "$venv/bin/schemathesis" ]; then
  mkdir -p "$cache"
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
fi
echo "$venv/bin/schemathesis"
