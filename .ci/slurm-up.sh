#!/usr/bin/env bash
# A single-node Slurm cluster on this host, for tests/workflow/test_slurm.py (Debian 12, root,
# no systemd needed): munged, slurmctld and slurmd. Stop it with .ci/slurm-down.sh.
# Idempotent: installs only missing packages, rewrites slurm.conf, restarts the daemons only
# when it changed, and starts only those not running. Ends when the node is schedulable.
# Knobs: SLURM_PARTITION (default cpu, the partition profiles/slurm asks for),
#        SLURM_UP_TIMEOUT (seconds per wait, default 60).
set -euo pipefail

PARTITION=${SLURM_PARTITION:-cpu}
TIMEOUT=${SLURM_UP_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
LOGS=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

log() { printf '[slurm-up] %s\n' "$*" >&2; }
die() {  # the reason, then the daemons' logs and why the node is down
  log "ERROR: $*"
  for f in /var/log/munge/munged.log "$LOGS/slurmctld.log" "$LOGS/slurmd.log"; do
    [[ -f $f ]] && { echo "----- tail $f" >&2; tail -n 25 "$f" >&2; }
  done
  command -v sinfo >/dev/null && timeout 5 sinfo -R >&2 || true
  exit 1
}
wait_for() {  # wait_for WHAT COMMAND...: poll every 0.5 s until COMMAND succeeds
  local what=$1 deadline=$((SECONDS + TIMEOUT)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.5
  done
}
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

[[ $EUID -eq 0 ]] || die "must run as root"

# 1. Packages (Debian's slurm-wlm 22.05 pieces; the slurm-wlm metapackage is not needed).
missing=()
for p in slurmctld slurmd slurm-client munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install failed"
fi

# 2. Config. One node, addressed as 127.0.0.1 so its name need not resolve. linuxproc and
# task/none need no cgroups. No slurmdbd: accounting is off, which is why profiles/slurm polls
# with squeue; MinJobAge=600 keeps finished jobs in squeue/scontrol that long (the plugin needs
# >= 3 x its init-seconds-before-status-checks, and a test reads scontrol after the run).
NODE=$(hostname -s)
MEM=$(free -m | awk '/^Mem:/{print $2}')
MEM=$((MEM > 2048 ? MEM - 1024 : MEM / 2))   # leave some memory to the host
install -d -m 0755 /etc/slurm "$LOGS" /var/spool/slurmd /var/spool/slurmctld
install -d -m 0755 -o munge -g munge /run/munge /var/log/munge /var/lib/munge
install -d -m 0700 -o munge -g munge /etc/munge
conf="# Written by .ci/slurm-up.sh: a single-node cluster on localhost.
ClusterName=localcluster
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
ReturnToService=2
MinJobAge=600
KillWait=5
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP"
changed=0
if [[ ! -f $CONF || "$(cat "$CONF")" != "$conf" ]]; then
  printf '%s\n' "$conf" >"$CONF"
  changed=1
  log "wrote $CONF (node $NODE, $(nproc) CPUs, ${MEM} MB, partition $PARTITION)"
fi

# 3. munged, with a key (the munge package's postinst usually made one).
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating the munge key"
  mungekey --create --keyfile=/etc/munge/munge.key --force
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! alive "$MUNGE_PID"; then
  log "starting munged"
  rm -f "$MUNGE_PID" /run/munge/munge.socket.2*
  runuser -u munge -- /usr/sbin/munged || die "munged did not start"
fi
wait_for "munge" bash -c 'munge -n | unmunge'

# 4. slurmctld and slurmd; daemons running from an older slurm.conf are stopped first.
if ((changed)); then
  for pidfile in "$SLURMD_PID" "$CTLD_PID"; do
    if alive "$pidfile"; then
      pid=$(cat "$pidfile"); log "stopping pid $pid (slurm.conf changed)"; kill "$pid"
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
  done
fi
alive "$CTLD_PID" || { log "starting slurmctld"; /usr/sbin/slurmctld || die "slurmctld did not start"; }
wait_for "slurmctld (scontrol ping)" bash -c 'scontrol ping | grep -q "is UP"'
alive "$SLURMD_PID" || { log "starting slurmd"; /usr/sbin/slurmd -N "$NODE" || die "slurmd did not start"; }

# 5. The node must be schedulable. One left down or drained by an earlier config is resumed once.
resumed=0
deadline=$((SECONDS + TIMEOUT))
until [[ $(sinfo -h -n "$NODE" -o %t 2>/dev/null) =~ ^(idle|mix|alloc)$ ]]; do
  state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
  if [[ $state =~ ^(down|drain|drng) ]] && ((!resumed)); then
    log "node is $state: resuming it"; scontrol update NodeName="$NODE" State=RESUME || true; resumed=1
  fi
  ((SECONDS < deadline)) || die "node $NODE not idle after ${TIMEOUT}s (state '${state:-none}')"
  sleep 0.5
done
log "node $NODE is up in partition $PARTITION"
