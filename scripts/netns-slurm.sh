#!/usr/bin/env bash
# A real multi-node Slurm cluster on this machine: slurmctld on the host and one slurmd per
# node, each node in its own network namespace with its own IP address (on a private bridge),
# hostname and /tmp. srun/sbatch place ranks on distinct hosts; OpenMPI (srun --mpi=pmix) and
# any TCP code talk across them over real sockets. Needs root (CI runs as root).
#
# The project's version of ../shared/recipes/netns-slurm.sh (the tested recipe in the shared
# folder); what it adds: `up` is idempotent (a cluster already up with the same shape is
# reused, so parallel tests can all call it), calls are serialised with flock, `status`, and
# `up` fails with the daemons' logs when the nodes do not come up idle.
#
#   netns-slurm.sh up [NODES] [CPUS_PER_NODE]   # default 3 nodes x $(nproc) CPUs
#   netns-slurm.sh down
#   netns-slurm.sh status                       # exit 0 when up (prints sinfo), 1 when not
#
# Node i is dn<i> at 10.87.0.(10+i); the host (controller, a submit host) is 10.87.0.1 on the
# bridge dr0. Shared file system: everything but /tmp (put binaries, job folders and task
# sandboxes elsewhere, e.g. under the checkout). The addresses live only inside the namespaces
# this script makes; nothing leaves the machine. Tested with Debian 12's slurm-wlm 22.05 and
# OpenMPI 4.1.
set -euo pipefail
cmd="${1:-up}"
nodes="${2:-3}"
cpus="${3:-$(nproc)}"
conf=/etc/slurm/slurm.conf
state=/run/netns-slurm.state   # "NODES CPUS" of the cluster that is up
log() { echo "netns-slurm: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "needs root (running as uid $(id -u)): it makes network namespaces and starts slurmd"
    exit 2
fi
case "$nodes$cpus" in *[!0-9]*) log "NODES and CPUS must be numbers"; exit 2 ;; esac

# One call at a time (tests call `up` in parallel).
exec 9>/run/netns-slurm.lock
flock 9

# A pid file's process is alive and is the daemon it names (pids are reused after a reboot
# or when the daemons were killed without removing their files).
pid_alive() {
    [ -f "$1" ] || return 1
    local p comm
    p=$(cat "$1")
    comm=$(cat "/proc/$p/comm" 2>/dev/null) || return 1
    case "$comm" in slurmctld | slurmd | slurmstepd) return 0 ;; esac
    return 1
}

is_up() {   # the cluster recorded in $state runs and all its nodes answer
    [ -f "$state" ] || return 1
    local n c
    read -r n c <"$state"
    pid_alive /run/slurmctld.pid || return 1
    for i in $(seq 1 "$n"); do pid_alive "/run/slurmd-dn$i.pid" || return 1; done
    # Every node answers (idle, mixed or allocated; not down, drained or unknown).
    local answering
    answering=$(sinfo -h -N -o '%N %T' 2>/dev/null | awk '$2 ~ /^(idle|mixed|allocated|completing)$/' | sort -u | wc -l)
    [ "$answering" -eq "$n" ]
}

down() {
    local pids=()
    for f in /run/slurmd-dn*.pid /run/slurmctld.pid; do
        pid_alive "$f" && pids+=("$(cat "$f")")
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 1 100); do   # a namespace lives while a process holds it
        local alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for ns in $(ip netns list 2>/dev/null | awk '/^dn[0-9]+/{print $1}'); do ip netns del "$ns" || true; done
    for l in $(ip -o link 2>/dev/null | awk -F'[ :@]+' '$2 ~ /^dv[0-9]+$/ {print $2}'); do
        ip link del "$l" 2>/dev/null || true
    done
    ip link del dr0 2>/dev/null || true
    rm -rf /var/spool/slurmctld/* /var/spool/slurmd-dn* /run/slurmd-dn*.pid "$state"
}

case "$cmd" in
down)
    down
    log "down"
    exit 0
    ;;
status)
    if is_up; then
        log "up ($(cat "$state"): nodes, CPUs per node)"
        sinfo
        exit 0
    fi
    log "not up"
    exit 1
    ;;
up) ;;
*)
    log "usage: $0 up [NODES] [CPUS_PER_NODE] | down | status"
    exit 2
    ;;
esac

if is_up && [ "$(cat "$state")" = "$nodes $cpus" ]; then
    log "already up ($nodes nodes x $cpus CPUs)"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null ||
    ! command -v ip >/dev/null || ! command -v nsenter >/dev/null; then
    log "installing slurm-wlm, munge, iproute2"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge iproute2 procps util-linux >/dev/null
fi
down
mkdir -p /etc/slurm /var/spool/slurmctld /var/log/slurm /run/munge
chown munge:munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged 9>&-

ip link add dr0 type bridge
ip addr add 10.87.0.1/24 dev dr0
ip link set dr0 up
{
    cat <<CONF
ClusterName=netns
SlurmctldHost=$(hostname -s)(10.87.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Nodes may declare more CPUs than this machine has (throughput runs use that).
SlurmdParameters=config_overrides
ReturnToService=2
# Ended jobs stay visible to squeue -t all for 5 minutes (what pilots read their end from).
MinJobAge=300
KillWait=5
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd-%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
CONF
    for i in $(seq 1 "$nodes"); do
        echo "NodeName=dn$i NodeAddr=10.87.0.$((10 + i)) CPUs=$cpus RealMemory=4000 State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=dn[1-$nodes] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
} >"$conf"
slurmctld -c 9>&-
for i in $(seq 1 "$nodes"); do
    ip netns add "dn$i"
    ip link add "dv$i" type veth peer name eth0 netns "dn$i"
    ip link set "dv$i" master dr0 up
    ip netns exec "dn$i" ip addr add "10.87.0.$((10 + i))/24" dev eth0
    ip netns exec "dn$i" ip link set eth0 up
    ip netns exec "dn$i" ip link set lo up
    mkdir -p "/var/tmp/netns-slurm/dn$i" "/var/spool/slurmd-dn$i"
    # nsenter, not 'ip netns exec': the latter remounts /sys and hides the cgroup mounts
    # slurmd reads. Each node gets its own /tmp (PMIx client directories collide otherwise).
    nsenter --net="/var/run/netns/dn$i" unshare --uts --mount --propagation private \
        sh -c "hostname dn$i; mount --bind /var/tmp/netns-slurm/dn$i /tmp; exec slurmd -N dn$i" \
        9>&-
done
echo "$nodes $cpus" >"$state"
for _ in $(seq 1 120); do
    if [ "$(sinfo -h -o %T 2>/dev/null | sort -u)" = idle ] &&
        [ "$(sinfo -h -N -o %N 2>/dev/null | sort -u | wc -l)" -eq "$nodes" ]; then
        log "up: $nodes nodes x $cpus CPUs"
        sinfo
        exit 0
    fi
    sleep 0.5
done
log "the nodes did not come up idle within 60 s:"
sinfo -N -l >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log >&2 || true
for i in $(seq 1 "$nodes"); do tail -n 10 "/var/log/slurm/slurmd-dn$i.log" >&2 || true; done
rm -f "$state"
exit 1
