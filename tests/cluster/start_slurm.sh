#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the cluster tests (no systemd, no root services
# left behind): munged, slurmctld and slurmd started by hand, with all their files under STATE_DIR.
#
#   tests/cluster/start_slurm.sh start STATE_DIR   install slurm-wlm + munge if missing (Debian/Ubuntu,
#                                                  as root), write STATE_DIR/slurm.conf, start the
#                                                  daemons, wait until the node is idle; prints
#                                                  SLURM_CONF=STATE_DIR/slurm.conf on its last line
#   tests/cluster/start_slurm.sh stop STATE_DIR    cancel the cluster's jobs, stop the daemons by PID
#
# Clients (sbatch, squeue, scontrol, snakemake's SLURM plugin) find the cluster through the environment
# variable SLURM_CONF, and where that is unset (snakemake's job step drops SLURM_* variables before it
# calls srun inside a job) through /etc/slurm/slurm.conf, linked to STATE_DIR/slurm.conf while the
# cluster runs; a machine with its own /etc/slurm/slurm.conf is left alone (start fails). The node has
# fake GPUs (gres gpu, File=/dev/null): jobs may request them and run on the CPU. Accounting (slurmdbd,
# sacct) is not set up: status queries go through squeue, so finished jobs stay visible for MinJobAge
# seconds. Environment knobs: SLURM_TEST_CPUS (CPUs the node declares; default: the machine's, at
# least 4), SLURM_TEST_MEM_MB (memory it declares; default: 3/4 of RAM), SLURM_TEST_MAXTIME (the
# partition's time limit in minutes, default 300).
set -euo pipefail

die() {
    echo "start_slurm.sh: $*" >&2
    exit 1
}

action=${1:-}
state=${2:-}
[[ $action == start || $action == stop ]] && [[ -n $state ]] || die "usage: $0 start|stop STATE_DIR"
mkdir -p "$state"
state=$(cd "$state" && pwd)
conf=$state/slurm.conf
export SLURM_CONF=$conf

pid_of() { # pid_of FILE: the pid in FILE when that process is alive
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

stop_pid() { # stop_pid NAME PIDFILE: TERM, wait up to 15 s, then KILL
    local pid i
    pid=$(pid_of "$2") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || {
            echo "stopped $1 (pid $pid)"
            return 0
        }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    echo "killed $1 (pid $pid)"
}

system_conf=/etc/slurm/slurm.conf

unlink_system_conf() { # remove /etc/slurm/slurm.conf when it is our link
    if [[ -L $system_conf && $(readlink "$system_conf") == "$conf" ]]; then
        rm -f "$system_conf"
        [[ ! -f $state/created_etc_slurm ]] || rmdir /etc/slurm 2>/dev/null || true
    fi
}

link_system_conf() {
    if [[ -L $system_conf ]]; then
        local other
        other=$(readlink "$system_conf")
        if [[ $other != "$conf" ]] && pid_of "$(dirname "$other")/slurmctld.pid" >/dev/null; then
            die "another test cluster is running ($system_conf -> $other); stop it first: $0 stop $(dirname "$other")"
        fi
        rm -f "$system_conf" # ours, or left behind by a test cluster that is gone
    elif [[ -e $system_conf ]]; then
        die "$system_conf exists (this machine has its own SLURM setup); not starting a test cluster over it"
    fi
    [[ -d /etc/slurm ]] || { mkdir -p /etc/slurm 2>/dev/null && touch "$state/created_etc_slurm"; } ||
        die "cannot create /etc/slurm (run as root)"
    ln -s "$conf" "$system_conf" 2>/dev/null || die "cannot link $system_conf to $conf (run as root)"
}

stop_cluster() {
    if [[ -f $conf ]] && pid_of "$state/slurmctld.pid" >/dev/null; then
        # jobs still running (e.g. a failed test) must not outlive the cluster
        timeout 10 scancel --full --quiet --partition=debug 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [[ -z $(timeout 5 squeue -h -t running,completing -o %i 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
    stop_pid slurmd "$state/slurmd.pid"
    stop_pid slurmctld "$state/slurmctld.pid"
    stop_pid munged "$state/munge/munged.pid"
    unlink_system_conf
}

if [[ $action == stop ]]; then
    stop_cluster
    exit 0
fi

# --- install (Debian's packages) ------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null ||
    ! command -v munged >/dev/null; then
    [[ $(id -u) == 0 ]] || die "slurm-wlm and munge are not installed and this is not root: apt-get install slurm-wlm munge"
    command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and there is no apt-get"
    echo "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || echo "warning: apt-get update failed; trying the cached package lists" >&2
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$state/apt.log" 2>&1 ||
        die "apt-get install slurm-wlm munge failed (see $state/apt.log): $(tail -n 5 "$state/apt.log")"
fi
for tool in slurmctld slurmd munged sbatch squeue scontrol sinfo scancel; do
    command -v "$tool" >/dev/null || die "$tool not found after installing slurm-wlm and munge"
done

# --- munge: a private daemon with its own key and socket ------------------------------------------
stop_cluster >/dev/null # a leftover cluster in the same STATE_DIR
link_system_conf
trap 'status=$?; ((status == 0)) || stop_cluster >&2; exit $status' EXIT # a failed start leaves nothing running
mkdir -p "$state/munge" "$state/ctld" "$state/d"
chmod 0700 "$state/munge"
if [[ ! -s $state/munge/munge.key ]]; then
    head -c 1024 /dev/urandom >"$state/munge/munge.key"
fi
chmod 0400 "$state/munge/munge.key"
socket=$state/munge/munge.socket
munged --force --key-file="$state/munge/munge.key" --socket="$socket" --pid-file="$state/munge/munged.pid" \
    --log-file="$state/munge/munged.log" --seed-file="$state/munge/munged.seed" ||
    die "munged did not start: $(tail -n 5 "$state/munge/munged.log" 2>/dev/null)"

# --- slurm.conf: one node (this machine, 127.0.0.1) with fake GPUs, one partition ------------------
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
host=$(hostname -s)
cpus=${SLURM_TEST_CPUS:-$(nproc)}
((cpus >= 4)) || cpus=4 # oversubscribed on small machines: short jobs need not queue behind each other
mem_mb=${SLURM_TEST_MEM_MB:-$(awk '/^MemTotal:/ {print int($2 / 1024 * 3 / 4)}' /proc/meminfo)}
max_time=${SLURM_TEST_MAXTIME:-300}
gpus=${SLURM_TEST_GPUS:-4}
fake_devices=(/dev/null /dev/zero /dev/full /dev/urandom) # any existing file will do; slurm needs one per GPU
((gpus >= 1 && gpus <= ${#fake_devices[@]})) || die "SLURM_TEST_GPUS must be 1 to ${#fake_devices[@]}"
ctld_port=$(free_port)
slurmd_port=$(free_port)
[[ $ctld_port != "$slurmd_port" ]] || slurmd_port=$(free_port)

cat >"$conf" <<EOF
# written by tests/cluster/start_slurm.sh: a single-node test cluster, daemons run by hand
ClusterName=smalldltest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
GresTypes=gpu
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
ReturnToService=2
# squeue is the status command (no accounting): keep finished jobs visible long after the plugin's
# first status check (MinJobAge >= 3x --slurm-init-seconds-before-status-checks)
MinJobAge=3600
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$gpus State=UNKNOWN
# a partition time limit, enforced at submission (sbatch fails): group jobs must fit in it
EnforcePartLimits=ALL
PartitionName=debug Nodes=ALL Default=YES MaxTime=$max_time State=UP
EOF
{
    echo "# fake GPUs: jobs may request them (--gpus=N, CUDA_VISIBLE_DEVICES gets set); nothing opens these files"
    for ((i = 0; i < gpus; i++)); do echo "NodeName=$host Name=gpu File=${fake_devices[i]}"; done
} >"$state/gres.conf"

# --- daemons --------------------------------------------------------------------------------------
slurmctld -f "$conf" -c -i || die "slurmctld did not start: $(tail -n 20 "$state/slurmctld.log" 2>/dev/null)"
slurmd -f "$conf" -N "$host" || die "slurmd did not start: $(tail -n 20 "$state/slurmd.log" 2>/dev/null)"

for ((i = 0; i < 300; i++)); do
    node_state=$(timeout 5 sinfo -h -n "$host" -o %T 2>/dev/null || true)
    [[ $node_state == idle ]] && break
    sleep 0.2
done
if [[ $node_state != idle ]]; then
    log=$(tail -n 15 "$state/slurmctld.log" "$state/slurmd.log" 2>/dev/null || true)
    die "the node did not become idle within 60 s (state: '${node_state:-none}'):"$'\n'"$log"
fi
echo "SLURM cluster up: node $host, $cpus CPUs, $mem_mb MB, $gpus fake GPUs, partition debug (MaxTime $max_time min)"
echo "SLURM_CONF=$conf"
