#!/usr/bin/env bash
# Stop the cluster started by tests/cluster/slurm-up.sh: SIGTERM to exactly the PIDs it recorded
# (slurmd, slurmctld, munged), SIGKILL after 10 s if one is still alive; then remove the
# /etc/slurm/{slurm,gres}.conf it wrote (or restore the ones it backed up). A slurm.conf left
# behind with slurmctld down would make every later `snakemake` call ~9 s slower (the slurm
# executor plugin runs `scontrol show config` at import time).
# $AQUAFLOW_SLURM_STATE (required: the folder slurm-up.sh used) must be a private folder (a real
# directory owned by root, mode 0700), else nothing is done; a recorded PID is ended only if that
# process is the daemon it names (/proc/<pid>/comm).
set -uo pipefail

STATE=${AQUAFLOW_SLURM_STATE:-}
CONF_DIR=/etc/slurm
MARK="# written by aquaflow tests/cluster/slurm-up.sh"
private_dir() { [[ -d $1 && ! -L $1 && $(stat -c '%u %a' "$1") == "0 700" ]]; }

if [[ -z $STATE ]] || ! private_dir "$STATE"; then
  echo "slurm-down: AQUAFLOW_SLURM_STATE='$STATE' is not a private folder (root-owned, mode 0700): refused" >&2
  exit 2
fi

for d in slurmd slurmctld munged; do
  f=$STATE/$d.pid
  [[ -f $f && ! -L $f ]] || continue
  pid=$(cat "$f")
  if [[ ! $pid =~ ^[0-9]+$ ]] || [[ $(cat "/proc/$pid/comm" 2>/dev/null) != "$d" ]]; then
    rm -f "$f"  # gone, or the PID now names another process: not ours to end
    continue
  fi
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
  if [[ -f $STATE/$f.orig && ! -L $STATE/$f.orig ]]; then
    mv -f "$STATE/$f.orig" "$CONF_DIR/$f"
  elif [[ -f $CONF_DIR/$f ]] && grep -qF "$MARK" "$CONF_DIR/$f"; then
    rm -f "$CONF_DIR/$f"
  fi
done
echo "slurm-down: stopped" >&2
