#!/usr/bin/env bash
# Stop the cluster started by tests/cluster/slurm-up.sh: SIGTERM to exactly the PIDs it recorded
# (slurmd, slurmctld, munged), SIGKILL after 10 s if one is still alive; then remove the
# /etc/slurm/{slurm,gres}.conf it wrote (or restore the ones it backed up). A slurm.conf left
# behind with slurmctld down would make every later `snakemake` call ~9 s slower (the slurm
# executor plugin runs `scontrol show config` at import time).
set -uo pipefail

STATE=${AQUAFLOW_SLURM_STATE:-/tmp/aquaflow-slurm}
CONF_DIR=/etc/slurm
MARK="# written by aquaflow tests/cluster/slurm-up.sh"

for d in slurmd slurmctld munged; do
  f=$STATE/$d.pid
  [[ -f $f ]] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "slurm-down: $d ($pid) ignored SIGTERM, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -f "$f"
done

for f in slurm.conf gres.conf; do
  if [[ -f $STATE/$f.orig ]]; then
    mv -f "$STATE/$f.orig" "$CONF_DIR/$f"
  elif [[ -f $CONF_DIR/$f ]] && grep -qF "$MARK" "$CONF_DIR/$f"; then
    rm -f "$CONF_DIR/$f"
  fi
done
echo "slurm-down: stopped" >&2
