#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm executor's tests and for trying `--executor slurm`.
#
#   scripts/slurm_cluster.sh install   # Debian's slurm-wlm + munge (root, apt-get); nothing when present
#   scripts/slurm_cluster.sh start     # munged, slurmctld, slurmd; waits until the node takes jobs
#   scripts/slurm_cluster.sh status    # exit 0 when the cluster answers and its node is up
#   scripts/slurm_cluster.sh stop      # cancels every job, stops the daemons, keeps nothing running
#
# Runs as root without systemd: munged runs as the munge user, slurmctld and slurmd as root (SlurmUser=root), with
# linuxproc process tracking, no task plugin and no accounting (so `sacct` has nothing: the executor reads job
# states with squeue/scontrol). The node is `hostname -s` with the CPUs and memory `slurmd -C` reports.
# State and logs live in $EVALKIT_SLURM_STATE (default /tmp/evalkit-slurm). The configuration is written to
# /etc/slurm/slurm.conf only when that file is absent or was written by this script: a real cluster's is never touched.
set -euo pipefail

STATE="${EVALKIT_SLURM_STATE:-/tmp/evalkit-slurm}"
CONF=/etc/slurm/slurm.conf
MARK="# written by evalkit scripts/slurm_cluster.sh"

say() { echo "slurm_cluster: $*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then say "$1 needs root (the daemons run as root without systemd)"; exit 2; fi
}

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  need_root install
  command -v apt-get >/dev/null || { say "no apt-get: install Slurm (slurm-wlm) and munge with your package manager"; exit 2; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc)"
  mem="$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)"
  mem="${mem:-1024}"
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    say "$CONF exists and is not ours: not touching a real cluster's configuration"; exit 2
  fi
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
  cat >"$CONF" <<EOF
$MARK
ClusterName=evalkit
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
# quick kills and a long memory of finished jobs: scontrol answers for a job's end state for 30 minutes
KillWait=5
MinJobAge=1800
SchedulerParameters=defer_batch=0
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -1; }

status() {
  local st
  st="$(node_state)"
  case "$st" in
    idle*|mixed*|allocated*|completing*) echo "up ($st)"; return 0 ;;
    *) echo "down (${st:-no answer})"; return 1 ;;
  esac
}

start() {
  need_root start
  install
  if status >/dev/null 2>&1; then say "already up"; return 0; fi
  write_conf
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  if ! pgrep -x munged >/dev/null; then
    [ -s /etc/munge/munge.key ] || { runuser -u munge -- mungekey --create >/dev/null 2>&1 || true; }
    runuser -u munge -- /usr/sbin/munged
  fi
  pgrep -x slurmctld >/dev/null || slurmctld -c
  pgrep -x slurmd >/dev/null || slurmd
  local i
  for i in $(seq 1 60); do
    if status >/dev/null 2>&1; then say "up after ${i} checks: node $(hostname -s), $(nproc) CPUs"; return 0; fi
    # a node that slurmctld remembers as down (unexpected reboot) is put back into service
    [ "$i" = 10 ] && scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    sleep 0.5
  done
  say "the node did not come up: see $STATE/slurmctld.log and $STATE/slurmd.log"
  tail -5 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
  exit 1
}

stop() {
  need_root stop
  if pgrep -x slurmctld >/dev/null; then
    scancel --full --quiet --user=root 2>/dev/null || true
    scontrol shutdown >/dev/null 2>&1 || true
  fi
  local i
  for i in $(seq 1 40); do
    pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break
    sleep 0.25
  done
  pkill -x slurmstepd 2>/dev/null || true
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
  say "stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
