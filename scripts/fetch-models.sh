#!/usr/bin/env bash
# Fetch the two models decache knows by name into its cache
# ($DECACHE_CACHE_DIR or ~/.cache/decache/models). Used by `make models`.
# Already-present files are kept; interrupted downloads resume.
set -euo pipefail
bin="${DECACHE_BIN:-target/release/decache}"
"$bin" pull smollm2
"$bin" pull gemma3-270m
