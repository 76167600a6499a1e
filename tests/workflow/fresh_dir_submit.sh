#!/usr/bin/env bash
# cluster-generic submit command: run the job script in a fresh, empty directory (no shared file
# system: the job sees only what it fetches from storage). Prints the job id; the exit status
# lands in $AQUAFLOW_JOBS/<id>.status for fresh_dir_status.sh.
set -euo pipefail
jobscript="$1"
id="job$(date +%s%N)$RANDOM"
dir="$(mktemp -d "$AQUAFLOW_JOBS/$id.XXXX")"
cp "$jobscript" "$dir/jobscript.sh"
(
    cd "$dir"
    set +e
    bash ./jobscript.sh >"$dir/job.log" 2>&1
    echo $? >"$AQUAFLOW_JOBS/$id.status.tmp"
    mv "$AQUAFLOW_JOBS/$id.status.tmp" "$AQUAFLOW_JOBS/$id.status"
) </dev/null >/dev/null 2>&1 &
echo "$id"
