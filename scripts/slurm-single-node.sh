#!/usr/bin/env bash
# Start a real single-node Slurm (munge, slurmctld, slurmd from Debian's packages) on this machine,
# for the Slurm tier of the tests. Idempotent: does nothing when `sinfo` already answers.
# Writes /etc/slurm/slurm.conf only when there is none, or when it is one this script wrote.
set -euo pipefail

MARK="# written by reprobox scripts/slurm-single-node.sh"
CONF=/etc/slurm/slurm.conf

if sinfo --noheader >/dev/null 2>&1; then exit 0; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  echo "slurm-single-node: $CONF exists and was not written by this script; not touching it" >&2
  exit 1
fi

host=$(hostname -s)
cpus=$(nproc)
memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
cat > "$CONF" <<CONF
$MARK
ClusterName=reprobox-test
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
# no cgroups in a container: track processes by parent id, bind no CPUs
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=10
SchedulerType=sched/backfill
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

# munge: a key of its own when the package left none
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key /run/munge; chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
  if sinfo --noheader --states=idle 2>/dev/null | grep -q idle; then exit 0; fi
  sleep 1
done
echo "slurm-single-node: the node did not come up; see /var/log/slurm/" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
