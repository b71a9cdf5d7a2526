#!/usr/bin/env bash
# ensure-slurm.sh: a single-node Slurm cluster (munged, slurmctld, slurmd) on
# this machine for the Slurm pool tests, idempotently.
#
# - installs slurm-wlm and munge from Debian when missing;
# - writes /etc/slurm/slurm.conf for this host when it is not ours already
#   (ClusterName=flocks-test), and a munge key when none exists;
# - starts munged, slurmctld and slurmd when they do not answer, and waits
#   (ENSURE_SLURM_TIMEOUT, 60 s) until `sinfo` shows the node idle or mixed.
#
# Needs root (apt, /etc, the daemons). The daemons run in the background
# (setsid) and outlive this script, like the docker engine of ensure-docker.sh.
set -euo pipefail

timeout="${ENSURE_SLURM_TIMEOUT:-60}"
log_dir=/var/log/slurm
conf=/etc/slurm/slurm.conf

if [ "$(id -u)" != 0 ]; then
    echo "ensure-slurm: needs root (apt-get, /etc/slurm, the daemons)" >&2
    exit 1
fi

missing=()
command -v slurmctld >/dev/null || missing+=(slurm-wlm)
command -v munged >/dev/null || missing+=(munge)
if [ ${#missing[@]} -gt 0 ]; then
    echo "ensure-slurm: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

host=$(hostname -s)
cpus=$(nproc)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$log_dir" /run/munge /var/log/munge
want=$(cat <<EOF
# Written by flocks' .ci/ensure-slurm.sh: a single-node test cluster.
ClusterName=flocks-test
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ReturnToService=2
MinJobAge=30
KillWait=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$cpus RealMemory=20000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
EOF
)
restart=""
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" >"$conf"
    restart=1
fi

# munge: a key owned by munge, mode 400, and munged running as munge.
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
chmod 700 /etc/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    echo "ensure-slurm: starting munged" >&2
    rm -f /run/munge/munged.pid
    setsid runuser -u munge -- /usr/sbin/munged --force </dev/null >/dev/null 2>&1 &
    for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }
if [ -n "$restart" ]; then
    for p in /run/slurmctld.pid /run/slurmd.pid; do
        running "$p" && kill "$(cat "$p")" 2>/dev/null || true
    done
    sleep 1
fi
if ! running /run/slurmctld.pid; then
    echo "ensure-slurm: starting slurmctld" >&2
    setsid /usr/sbin/slurmctld </dev/null >>"$log_dir/slurmctld.out" 2>&1
fi
if ! running /run/slurmd.pid; then
    echo "ensure-slurm: starting slurmd" >&2
    setsid /usr/sbin/slurmd </dev/null >>"$log_dir/slurmd.out" 2>&1
fi

for ((i = 0; i < timeout * 4; i++)); do
    state=$(sinfo -h -N -n "$host" -o '%T' 2>/dev/null | head -n 1 || true)
    case $state in
    idle* | mixed* | allocated*)
        echo "ensure-slurm: node $host is $state" >&2
        exit 0 ;;
    drain* | down*)
        # A node left drained by a test (or down after a restart): resume it.
        scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.25
done
echo "ensure-slurm: the node did not come up within ${timeout}s; last log lines:" >&2
tail -n 20 "$log_dir/slurmctld.log" "$log_dir/slurmd.log" >&2 2>/dev/null || true
exit 1
