#!/usr/bin/env bash
# A throw-away Slurm cluster on this machine, for trying the job scripts in this
# directory and for courier's tests (tests/slurm.rs): munged + slurmctld + one
# slurmd per node, every file (config, munge key, state, spool, logs, pid files,
# sockets) under one work directory. No systemd, no cgroups, nothing outside the
# work directory is written, and `down` stops only processes whose pid files this
# script wrote (checked against the executable before any signal is sent).
#
#   slurm/local-cluster.sh up       start, or confirm it is already up
#   slurm/local-cluster.sh status   what runs; exit 0 when up, 3 when not
#   slurm/local-cluster.sh env      prints `export SLURM_CONF=...` (eval it to use sbatch)
#   slurm/local-cluster.sh down     stop what `up` started; fine when nothing runs
#
#   eval "$(slurm/local-cluster.sh up)"        # start and point this shell at it
#   sbatch --wait slurm/bench-p2p.sbatch
#   slurm/local-cluster.sh down
#
# Environment (the same values for up, status, env and down):
#   COURIER_SLURM_DIR    work directory [<repository>/target/local-slurm]
#   COURIER_SLURM_NODES  nodes, each a slurmd on this host (node1, node2, ...) [2]
#   COURIER_SLURM_CPUS   CPUs each node offers [this machine's processors]
#   COURIER_SLURM_PORT   first TCP port: slurmctld, then one per slurmd [6817]
#
# Several nodes on one host are Slurm's "multiple slurmd" setup: each node has its
# own port, spool and pid file, and jobs spanning nodes (sbatch --nodes=2) really
# are spread over several slurmd daemons, so `srun` and `mpirun` start processes
# the way they do across machines (over loopback). Nodes offer COURIER_SLURM_CPUS
# CPUs each even when that is more than the machine has (SlurmdParameters=
# config_overrides): the tests run 2 nodes x 2 CPUs on a 2-core machine.
#
# Needs root (slurmd starts jobs as the submitting user; run it with sudo
# otherwise) and the Debian/Ubuntu packages slurmctld slurmd slurm-client munge,
# plus libpmix-dev for `srun --mpi=pmix`. Tested with Slurm 22.05 (Debian 12).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=${COURIER_SLURM_DIR:-$here/../target/local-slurm}
nodes=${COURIER_SLURM_NODES:-2}
cpus=${COURIER_SLURM_CPUS:-$(nproc)}
port=${COURIER_SLURM_PORT:-6817}

die() { echo "local-cluster: $*" >&2; exit 1; }
say() { echo "local-cluster: $*" >&2; }

[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "COURIER_SLURM_NODES=$nodes: expected a positive number"
[[ $cpus =~ ^[1-9][0-9]*$ ]] || die "COURIER_SLURM_CPUS=$cpus: expected a positive number"
[[ $port =~ ^[1-9][0-9]*$ ]] || die "COURIER_SLURM_PORT=$port: expected a port number"
mkdir -p "$work"
work=$(cd "$work" && pwd)
conf=$work/etc/slurm.conf
socket=$work/munge/munge.socket

# The pid file of each daemon and the executable it must be running.
daemons() {
  echo "munged $work/munge/munged.pid munged"
  echo "slurmctld $work/run/slurmctld.pid slurmctld"
  for ((i = 1; i <= nodes; i++)); do
    echo "slurmd:node$i $work/run/slurmd-node$i.pid slurmd"
  done
}

# The pid in `pidfile` if that process is alive and is `exe`, else nothing.
live_pid() {
  local pidfile=$1 exe=$2 pid
  [[ -s $pidfile ]] || return 0
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  [[ -d /proc/$pid ]] || return 0
  # (the command name, not /proc/PID/exe: Debian's slurmd is slurmd-wlm behind a link)
  [[ $(cat "/proc/$pid/comm" 2>/dev/null || true) == "$exe" ]] || return 0
  echo "$pid"
}

is_up() {
  local name pidfile exe
  while read -r name pidfile exe; do
    [[ -n $(live_pid "$pidfile" "$exe") ]] || return 1
  done < <(daemons)
  local states
  states=$(SLURM_CONF=$conf sinfo -h -N -o '%T' 2>/dev/null) || return 1
  [[ -n $states ]] && ! grep -q -E 'down|drain|fail|unk' <<<"$states"
}

write_config() {
  mkdir -p "$work"/{etc,munge,run,log,state}
  for ((i = 1; i <= nodes; i++)); do mkdir -p "$work/spool/node$i" "$work/tmp/node$i"; done
  chmod 0700 "$work/munge"
  cat > "$conf" <<EOF
# Written by slurm/local-cluster.sh: a single-host test cluster under $work.
ClusterName=courier-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=5
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool/%n
# Per node: srun --mpi=pmix makes its client directory under TmpFS, named after
# the job and step only, so nodes sharing one /tmp would collide.
TmpFS=$work/tmp/%n
SlurmctldPidFile=$work/run/slurmctld.pid
SlurmdPidFile=$work/run/slurmd-%n.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd-%n.log
SlurmdUser=root
TaskProlog=$work/etc/task-prolog.sh
NodeName=node[1-$nodes] NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((port + 1))-$((port + nodes)) CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=node[1-$nodes] Default=YES MaxTime=60 State=UP OverSubscribe=NO
EOF
  # Open MPI names its shared-memory segments after the host and the rank on the
  # node, so two virtual nodes of this host would share segments (and crash):
  # each node gets its own directory for them, as separate machines would. Not
  # in the batch step: mpirun passes its OMPI_MCA_* settings on to every process
  # it starts, while without one they inherit their node's from the step's orted.
  # shellcheck disable=SC2016 # $SLURM_STEP_ID and $SLURMD_NODENAME are the prolog's
  printf '#!/bin/sh\n[ -z "$SLURM_STEP_ID" ] || echo "export %s=%s/tmp/$SLURMD_NODENAME"\n' \
    OMPI_MCA_btl_vader_backing_directory "$work" > "$work/etc/task-prolog.sh"
  chmod 0755 "$work/etc/task-prolog.sh"
  # slurmd 22.05 always loads a cgroup plugin; autodetection fails without a v1
  # mount, and the v1 plugin's initialisation touches nothing.
  echo "CgroupPlugin=cgroup/v1" > "$work/etc/cgroup.conf"
}

up() {
  if is_up; then
    say "already up ($work)"
    echo "export SLURM_CONF=$conf"
    return 0
  fi
  local tool
  for tool in slurmctld slurmd munged mungekey sinfo; do
    command -v "$tool" >/dev/null ||
      die "needs $tool: apt-get install slurmctld slurmd slurm-client munge (.ci/setup --slurm)"
  done
  [[ $(id -u) -eq 0 ]] || die "needs root: slurmd starts jobs as the submitting user (try sudo -E $0 up)"
  stop_all # whatever is left of an earlier, half-started cluster
  write_config
  [[ -s $work/munge/munge.key ]] || mungekey --create --keyfile="$work/munge/munge.key" 2>/dev/null
  chmod 0600 "$work/munge/munge.key"
  # --force: munged refuses a socket directory whose parents other users could
  # write (a checkout under /tmp); the key and socket directories are private.
  munged --force --socket="$socket" --key-file="$work/munge/munge.key" \
    --pid-file="$work/munge/munged.pid" --log-file="$work/log/munged.log" \
    --seed-file="$work/munge/munged.seed" 2>>"$work/log/munged.log" ||
    die "munged did not start: $(tail -n 3 "$work/log/munged.log")"
  chmod 0711 "$work/munge"
  export SLURM_CONF=$conf
  slurmctld -c -f "$conf" || die "slurmctld did not start: $(tail -n 5 "$work/log/slurmctld.log")"
  for ((i = 1; i <= nodes; i++)); do
    slurmd -N "node$i" -f "$conf" ||
      die "slurmd node$i did not start: $(tail -n 5 "$work/log/slurmd-node$i.log")"
  done
  # Up when every node is idle: at most 30 s.
  for ((t = 0; t < 300; t++)); do
    if [[ $(sinfo -h -N -o '%T' 2>/dev/null | grep -c '^idle') -eq $nodes ]]; then
      say "up: $nodes node(s) x $cpus CPUs, partition 'local' ($work)"
      echo "export SLURM_CONF=$conf"
      return 0
    fi
    sleep 0.1
  done
  sinfo -N >&2 || true
  die "nodes did not become idle within 30 s; logs in $work/log"
}

# Stops the daemons this script started (pid file + matching executable),
# slurmd first; waits until they are gone. Jobs still running are cancelled
# first: their slurmstepd processes would outlive slurmd.
stop_all() {
  local name pidfile exe pid pids=()
  if [[ -n $(live_pid "$work/run/slurmctld.pid" slurmctld) ]]; then
    SLURM_CONF=$conf scancel --partition=local 2>/dev/null || true
    for ((t = 0; t < 100; t++)); do
      [[ -z $(SLURM_CONF=$conf squeue -h 2>/dev/null) ]] && break
      sleep 0.1
    done
  fi
  while read -r name pidfile exe; do
    pid=$(live_pid "$pidfile" "$exe")
    if [[ -n $pid ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid:$name:$pidfile")
    fi
  done < <(daemons | tac)
  local entry
  for entry in "${pids[@]}"; do
    pid=${entry%%:*}
    for ((t = 0; t < 100 && ${#pid} > 0; t++)); do
      [[ -d /proc/$pid ]] || break
      sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "${entry##*:}"
  done
}

down() {
  if [[ ! -f $conf ]]; then
    say "down (nothing was started under $work)"
    return 0
  fi
  stop_all
  say "down"
}

status() {
  local name pidfile exe pid up=0
  while read -r name pidfile exe; do
    pid=$(live_pid "$pidfile" "$exe")
    if [[ -n $pid ]]; then
      printf '%-14s running, pid %s\n' "$name" "$pid"
    else
      printf '%-14s stopped\n' "$name"
      up=3
    fi
  done < <(daemons)
  if [[ $up -eq 0 ]]; then
    SLURM_CONF=$conf sinfo -N || up=3
  fi
  return $up
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) die "usage: $0 up|down|status|env" ;;
esac
