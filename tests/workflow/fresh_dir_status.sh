#!/usr/bin/env bash
# cluster-generic status command for fresh_dir_submit.sh: running | success | failed
f="$AQUAFLOW_JOBS/$1.status"
if [[ ! -f "$f" ]]; then echo running; elif [[ "$(cat "$f")" == 0 ]]; then echo success; else echo failed; fi
