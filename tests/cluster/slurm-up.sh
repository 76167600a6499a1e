#!/usr/bin/env bash
# Bring up a real one-node Slurm cluster on this host for the tests (root, Debian/Ubuntu):
#   partitions cpu (default) and gpu, one fake GPU declared as a generic resource (gres.conf
#   File=/dev/null: Slurm schedules and exports CUDA_VISIBLE_DEVICES; nothing computes on it).
# Installs slurm-wlm + munge with apt if missing, writes /etc/slurm/{slurm,gres}.conf (an existing
# one is backed up and restored by slurm-down.sh), starts munged, slurmctld and slurmd in the
# background and records their PIDs in $STATE/*.pid, then waits until the node is idle.
# $STATE ($AQUAFLOW_SLURM_STATE, else a new `mktemp -d` folder, printed) must be a private folder:
# a real directory owned by root with mode 0700; anything else (a folder another user planted in
# /tmp) is refused before it is used, since it decides which PIDs slurm-down.sh ends.
# No systemd, no cgroups, no accounting database (poll job states with squeue, see profiles/slurm).
# Stop with tests/cluster/slurm-down.sh (ends exactly the recorded PIDs, removes the config).
set -euo pipefail

CONF_DIR=/etc/slurm
MARK="# written by aquaflow tests/cluster/slurm-up.sh"
log() { echo "slurm-up: $*" >&2; }
# a real directory (not a link) owned by root, mode 0700: no other user can have put files in it
private_dir() { [[ -d $1 && ! -L $1 && $(stat -c '%u %a' "$1") == "0 700" ]]; }

[[ $(id -u) == 0 ]] || { log "needs root"; exit 2; }
if [[ -n ${AQUAFLOW_SLURM_STATE:-} ]]; then
  STATE=$AQUAFLOW_SLURM_STATE
else
  STATE=$(mktemp -d "${TMPDIR:-/tmp}/aquaflow-slurm.XXXXXXXX")
  log "state folder $STATE (stop with: AQUAFLOW_SLURM_STATE=$STATE tests/cluster/slurm-down.sh)"
fi
private_dir "$STATE" || { log "$STATE is not a private folder (root-owned, mode 0700): refused"; exit 2; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
for d in munged slurmctld slurmd; do
  if alive "$STATE/$d.pid"; then log "already running ($STATE/$d.pid); run slurm-down.sh first"; exit 3; fi
done
if [[ -f /run/slurmctld.pid ]] && kill -0 "$(cat /run/slurmctld.pid)" 2>/dev/null; then
  log "a slurmctld not started by this script is running; refusing to replace its cluster"; exit 3
fi

# 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
  || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge with apt"
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(slurm-wlm munge)
  apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; }
fi

rm -f "$STATE"/*.pid

# 2. configuration (back up a pre-existing one, it is restored by slurm-down.sh)
mkdir -p "$CONF_DIR"
for f in slurm.conf gres.conf; do
  if [[ -f $CONF_DIR/$f ]] && ! grep -qF "$MARK" "$CONF_DIR/$f" && [[ ! -f $STATE/$f.orig ]]; then
    cp -p "$CONF_DIR/$f" "$STATE/$f.orig"
  fi
done

node_line=$(slurmd -C | head -n1)           # NodeName=vm CPUs=2 ... RealMemory=24105
node=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$node_line")
mem=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$node_line")
mem=$((mem * 95 / 100))                     # a slightly different CI machine never goes INVALID
node_line=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$mem/" <<<"$node_line")

cat >"$CONF_DIR/slurm.conf" <<CONF
$MARK
ClusterName=aquaflow-ci
# explicit addresses: the host name need not resolve (containers, CI runners)
SlurmctldHost=$node(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/lib/slurm/slurmd
StateSaveLocation=/var/lib/slurm/slurmctld
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
JobAcctGatherType=jobacct_gather/none
# finished jobs stay visible to squeue and scontrol for 1 h (the plugin needs >= 3 x init-seconds;
# test_slurm.py reads every job of its run from scontrol at the end, which on a busy machine came
# more than 10 min after the first job had finished)
MinJobAge=3600
SlurmctldDebug=info
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdDebug=info
SlurmdLogFile=/var/log/slurm/slurmd.log
GresTypes=gpu
$node_line NodeAddr=127.0.0.1 NodeHostname=$node Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
CONF

cat >"$CONF_DIR/gres.conf" <<CONF
$MARK
AutoDetect=off
# a GPU gres needs File=, else slurmd drops it and the node drains
NodeName=$node Name=gpu File=/dev/null Count=1
CONF

# 3. munge
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
# setpriv execs, so $! is munged itself
setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
  >"$STATE/munged.out" 2>&1 &
echo $! >"$STATE/munged.pid"
for _ in $(seq 100); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n | unmunge >/dev/null || { log "munged did not come up"; cat "$STATE/munged.out" >&2; exit 1; }

# 4. slurmctld + slurmd, fresh state (a DRAIN reason would survive a restart otherwise)
mkdir -p /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm
rm -rf /var/lib/slurm/slurmctld/* /var/lib/slurm/slurmd/*
/usr/sbin/slurmctld -D -c >"$STATE/slurmctld.out" 2>&1 &
echo $! >"$STATE/slurmctld.pid"
/usr/sbin/slurmd -D >"$STATE/slurmd.out" 2>&1 &
echo $! >"$STATE/slurmd.pid"

for _ in $(seq 300); do
  state=$(sinfo -h -N -o '%t' 2>/dev/null | head -n1 || true)
  [[ $state == idle ]] && break
  sleep 0.2
done
if [[ ${state:-} != idle ]]; then
  log "node not idle (state '${state:-?}')"
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log "$STATE"/*.out >&2 || true
  exit 1
fi
log "up: node $node idle, partitions: $(sinfo -h -o '%P' | tr '\n' ' ')"
