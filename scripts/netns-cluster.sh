#!/usr/bin/env bash
# An emulated multi-node cluster on one machine: N "nodes" as Linux network namespaces, each
# with its own host name, joined through a rate-limited link to a switch, and one Open MPI job
# launched across them (TCP between nodes, shared memory inside a node), the way mpirun starts
# a job on real nodes over ssh.
#
#   switch namespace  NAME-sw:  bridge "sw" (SUBNET.254), ports p0..pN-1; mpirun runs here
#   node namespaces   NAME-n<i>: eth0 (SUBNET.<i+1>), the other end of port p<i>
#
# Each node's link is limited to RATE in each direction (tc tbf or htb on both ends of its
# veth pair: the node's eth0 for what it sends, the switch port for what it receives). This
# emulates bandwidth only: there is no added latency (the kernel has no netem).
#
# Nothing is added to the root namespace: every interface and address lives in a namespace
# this script creates, and everything it created (namespaces, and with them interfaces,
# addresses and tc rules; the processes inside them; its scratch directory) is removed when it
# ends, fails or is interrupted. The launch is bounded by --time-limit.
#
# With --launcher the cluster stays up while COMMAND runs on the head (instead of being
# started by one mpirun): COMMAND may start mpirun as often as it likes (an elastic
# supervisor such as `loco launch`), and can take nodes down and bring them back with the
# generated `nodectl` ($NETNS_CLUSTER_CTL). --node-disk gives every node a private directory
# at one path, like the local disks of real nodes.
#
# Run as root. See docs/launch.md ("An emulated cluster on one machine").
set -euo pipefail

usage() {
  cat <<EOF
Usage: $0 [OPTIONS] [--] COMMAND [ARGS...]

Starts COMMAND on every rank of an Open MPI job spread over emulated nodes (network
namespaces on this machine), then removes everything it created. Run as root.

Options:
  -n, --nodes N            number of nodes (default 2)
  -r, --ranks-per-node R   MPI ranks per node (default 1)
      --rate RATE          each node's link rate per direction, in tc's units (10mbit,
                           100mbit, 1gbit); default: no limit
      --qdisc tbf|htb      the tc queueing discipline that enforces --rate (default tbf)
  -t, --time-limit S       stop the job after S seconds, exit 124 (default 600)
      --name NAME          prefix of the namespaces and host names (default loco<PID>)
      --subnet A.B.C       the nodes' /24 network (default 10.213.0; it exists only inside
                           the namespaces, so it cannot clash with the host's)
      --btl LIST           Open MPI byte transfer layers (default self,vader,tcp)
  -x NAME[=VALUE]          pass an environment variable to the ranks (mpirun -x; repeatable)
      --mca NAME VALUE     an Open MPI parameter (mpirun --mca; repeatable), e.g.
                           --mca coll_libnbc_iallreduce_algorithm ring (see docs/launch.md)
      --mpirun-arg ARG     one more argument for mpirun (repeatable)
      --launcher           run COMMAND once, on the head (where mpirun would run), with the
                           cluster up until it ends; COMMAND starts mpirun itself, as often as
                           it wants. It finds the cluster in its environment:
                             NETNS_CLUSTER_HOSTFILE  the nodes, one "HOST slots=R" line each
                             NETNS_CLUSTER_CTL       nodectl (below)
                             NETNS_CLUSTER_NODES     the node host names, space-separated
                             NETNS_CLUSTER_NODE_DISKS with --node-disk: where each node's
                                                     disk lives on this machine, in node order
                             OMPI_MCA_*              the launch settings (agent, transports,
                                                     -x, --mca), so that a plain
                                                     mpirun -np N --hostfile FILE ... uses them
                           (--mpirun-arg is refused with --launcher: pass those to COMMAND)
      --node-disk PATH     every node sees its own directory at PATH (a bind mount, kept
                           while the cluster lives), as on nodes with local disks; the head
                           sees this machine's PATH (created if missing, then removed again)
  -v, --verbose            print the topology and the mpirun command line
  -h, --help               this text
      --reap               remove what killed runs left behind (SIGKILL skips the cleanup):
                           namespaces with the default name loco<PID>-* whose PID no longer
                           runs, the processes in them and their shared-memory files; then exit

nodectl NODE commands (with --launcher in \$NETNS_CLUSTER_CTL; its path is printed with -v):
  down NODE    the node vanishes: its agent stops answering, as ssh would ("No route to
               host", exit 255), its link goes down, then every process in it is killed
               (SIGKILL), so that nothing it sends on its way out (a TCP FIN) arrives
  up NODE      the node is back: link up, the agent answers again (its --node-disk is kept)
  kill NODE    kills every process in the node, which stays reachable
  status NODE  prints "up" or "down"

Each rank sees OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_LOCAL_RANK/SIZE and its node's host
name (NAME-n<i>), as on real nodes. Ranks fill the nodes in order: node i holds ranks
i*R .. i*R+R-1.

Exit status: COMMAND's (mpirun's), 124 when the time limit ends the job, 130/143 when
interrupted (SIGINT/SIGTERM), 2 for bad input (not root, missing tools, a name in use).

Example (2 nodes x 2 ranks, 10 Mbit/s links):
  $0 -n 2 -r 2 --rate 10mbit -x OMP_NUM_THREADS=1 -- build/loco train configs/tiny-diloco.json
EOF
}

die() { # a user error: message, exit 2 (the EXIT trap removes whatever was created)
  echo "netns-cluster: error: $*" >&2
  exit 2
}
log() { [[ $verbose == 1 ]] && echo "netns-cluster: $*" >&2 || true; }

# ------------------------------------------------------------------------------ --reap
# Only namespaces named as this script names them by default (loco<PID>-n<i>, loco<PID>-sw)
# and only when that PID is gone: a running cluster is never touched.
reap_stale() {
  [[ $(id -u) -eq 0 ]] || die "--reap must run as root"
  local ns pid removed=0
  while read -r ns _; do
    [[ $ns =~ ^loco([0-9]+)-(sw|n[0-9]+)$ ]] || continue
    pid=${BASH_REMATCH[1]}
    kill -0 "$pid" 2>/dev/null && continue
    mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null || true)
    ((${#pids[@]} > 0)) && kill -KILL "${pids[@]}" 2>/dev/null
    ip netns del "$ns" && removed=$((removed + 1))
    rm -f /dev/shm/vader_segment."$ns".*
  done < <(ip netns list)
  echo "netns-cluster: removed $removed stale namespace(s)"
}
if [[ ${1:-} == --reap ]]; then
  reap_stale
  exit 0
fi

# ------------------------------------------------------------------------------ arguments
nodes=2
ranks_per_node=1
rate=""
qdisc=tbf
time_limit=600
name="loco$$"
subnet=10.213.0
btl=self,vader,tcp
verbose=0
launcher=0
node_disk=""
env_args=()
env_names=() # the -x arguments, for OMPI_MCA_mca_base_env_list with --launcher
extra_mpirun_args=()
mca_pairs=()       # NAME VALUE ... of --mca, for OMPI_MCA_<NAME> with --launcher
raw_mpirun_args=() # --mpirun-arg

need_value() { [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    -n | --nodes) need_value "$@"; nodes=$2; shift 2 ;;
    -r | --ranks-per-node) need_value "$@"; ranks_per_node=$2; shift 2 ;;
    --rate) need_value "$@"; rate=$2; shift 2 ;;
    --qdisc) need_value "$@"; qdisc=$2; shift 2 ;;
    -t | --time-limit) need_value "$@"; time_limit=$2; shift 2 ;;
    --name) need_value "$@"; name=$2; shift 2 ;;
    --subnet) need_value "$@"; subnet=$2; shift 2 ;;
    --btl) need_value "$@"; btl=$2; shift 2 ;;
    -x) need_value "$@"; env_args+=(-x "$2"); env_names+=("$2"); shift 2 ;;
    --mca) [[ $# -ge 3 ]] || die "--mca needs a name and a value (see --help)"
      extra_mpirun_args+=(--mca "$2" "$3"); mca_pairs+=("$2" "$3"); shift 3 ;;
    --mpirun-arg) need_value "$@"; extra_mpirun_args+=("$2"); raw_mpirun_args+=("$2"); shift 2 ;;
    --launcher) launcher=1; shift ;;
    --node-disk) need_value "$@"; node_disk=$2; shift 2 ;;
    -v | --verbose) verbose=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[[ $# -gt 0 ]] || die "no COMMAND given (see --help)"

is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
is_count "$nodes" && ((nodes <= 250)) || die "--nodes $nodes: want a whole number in 1..250"
is_count "$ranks_per_node" || die "--ranks-per-node $ranks_per_node: want a whole number >= 1"
is_count "$time_limit" || die "--time-limit $time_limit: want whole seconds >= 1"
[[ $qdisc == tbf || $qdisc == htb ]] || die "--qdisc $qdisc: want tbf or htb"
[[ -z $rate || $rate =~ ^[0-9]+(\.[0-9]+)?([kmgt]?(bit|bps))$ ]] ||
  die "--rate $rate: want a number and a unit, e.g. 10mbit, 100mbit, 1gbit"
((launcher == 0 || ${#raw_mpirun_args[@]} == 0)) ||
  die "--mpirun-arg is not used with --launcher (COMMAND starts mpirun): pass it to COMMAND"
if [[ -n $node_disk ]]; then
  [[ $node_disk == /* ]] || die "--node-disk $node_disk: want an absolute path"
  [[ ! -e $node_disk || -d $node_disk ]] || die "--node-disk $node_disk exists and is not a directory"
fi
# Namespace names are file names under /run/netns; host names are at most 64 characters.
[[ $name =~ ^[A-Za-z][A-Za-z0-9_-]{0,39}$ ]] ||
  die "--name $name: want a letter, then up to 39 letters, digits, '-' or '_'"
# Any /24 will do: it exists only inside the namespaces.
[[ $subnet =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] &&
  ((BASH_REMATCH[1] <= 255 && BASH_REMATCH[2] <= 255 && BASH_REMATCH[3] <= 255)) ||
  die "--subnet $subnet: want the first three numbers of a /24, e.g. 10.213.0"

# ------------------------------------------------------------------------------ environment
[[ $(id -u) -eq 0 ]] ||
  die "must run as root (creating network namespaces, links and tc rules needs it); try: sudo $0 ..."
for tool in ip tc mpirun timeout unshare; do
  command -v "$tool" >/dev/null ||
    die "'$tool' not found in PATH (ip and tc: apt-get install iproute2; mpirun: openmpi-bin; timeout, unshare: coreutils, util-linux)"
done

switch_ns="$name-sw"
node_ns=()
node_host=()
for ((i = 0; i < nodes; i++)); do
  node_ns+=("$name-n$i")
  node_host+=("$name-n$i")
done
for ns in "$switch_ns" "${node_ns[@]}"; do
  [[ ! -e /run/netns/$ns ]] ||
    die "network namespace '$ns' already exists (name in use: another run, or left from one killed with SIGKILL; pick another --name, or remove it with: ip netns del $ns)"
done

# ------------------------------------------------------------------------------ cleanup
created_ns=() # only what this run created, so that cleanup never touches anything else
run_dir=""
job_pid=""
created_disk="" # --node-disk's directory, when this run created it

# Processes still inside a namespace keep it (and its links) alive after `ip netns del`, so
# they go first: TERM, a moment to exit, then KILL. They are the ranks and daemons of this
# run's job (nothing else can be inside namespaces it just created).
kill_namespace_processes() {
  local ns pids=()
  for ns in "${created_ns[@]}"; do
    mapfile -t -O "${#pids[@]}" pids < <(ip netns pids "$ns" 2>/dev/null || true)
  done
  ((${#pids[@]} > 0)) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  local waited
  for ((waited = 0; waited < 50; waited++)); do
    local alive=0 p
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT
  trap '' INT TERM HUP # a second Ctrl-C must not leave the cleanup half done
  if [[ -n $job_pid ]] && kill -0 "$job_pid" 2>/dev/null; then
    kill -TERM "$job_pid" 2>/dev/null || true # timeout(1) passes it on to mpirun
    local waited
    for ((waited = 0; waited < 50; waited++)); do
      kill -0 "$job_pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  kill_namespace_processes
  local i
  for ((i = ${#created_ns[@]} - 1; i >= 0; i--)); do
    ip netns del "${created_ns[i]}" 2>/dev/null ||
      echo "netns-cluster: warning: could not remove namespace ${created_ns[i]}" >&2
  done
  [[ -n $run_dir ]] && rm -rf "$run_dir"
  # Only if empty: what the nodes wrote lived in their own disks under the scratch directory.
  if [[ -n $created_disk ]]; then rmdir "$created_disk" 2>/dev/null || true; fi
  # Open MPI's shared-memory segments are named after the host; ranks that were killed leave
  # theirs behind. These names are this run's own (its node host names).
  for ((i = 0; i < nodes; i++)); do
    rm -f /dev/shm/vader_segment."${node_host[i]}".*
  done
  log "removed ${#created_ns[@]} namespace(s) and $run_dir"
  exit "$rc"
}
on_signal() {
  echo "netns-cluster: $1: stopping the job and removing the cluster" >&2
  case $1 in INT) exit 130 ;; TERM) exit 143 ;; *) exit 129 ;; esac
}
trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

# ------------------------------------------------------------------------------ the network
add_ns() {
  ip netns add "$1" 2>/dev/null ||
    die "cannot create network namespace '$1' (name in use, or no namespace support here)"
  created_ns+=("$1")
  ip -n "$1" link set lo up
}

# Limits what DEV in namespace NS sends to RATE.
limit_rate() {
  local ns=$1 dev=$2
  [[ -n $rate ]] || return 0
  if [[ $qdisc == tbf ]]; then
    # burst: the bucket must hold more than one timer tick of traffic at RATE or tbf cannot
    # reach it; 64 kB covers 10 Mbit/s-1 Gbit/s at HZ >= 250 (tc raises it if needed).
    # latency: how long a packet may queue before it is dropped (TCP backs off then).
    tc -n "$ns" qdisc add dev "$dev" root tbf rate "$rate" burst 64kb latency 100ms || return 1
  else
    tc -n "$ns" qdisc add dev "$dev" root handle 1: htb default 1 || return 1
    tc -n "$ns" class add dev "$dev" parent 1: classid 1:1 htb rate "$rate" ceil "$rate" quantum 60000
  fi
}

add_ns "$switch_ns"
ip -n "$switch_ns" link add sw type bridge
ip -n "$switch_ns" addr add "$subnet.254/24" dev sw
ip -n "$switch_ns" link set sw up
for ((i = 0; i < nodes; i++)); do
  ns=${node_ns[i]}
  add_ns "$ns"
  # Created inside the switch namespace with its peer moved straight into the node's: the
  # pair never appears in the root namespace.
  ip -n "$switch_ns" link add "p$i" type veth peer name eth0 netns "$ns"
  ip -n "$switch_ns" link set "p$i" master sw up
  ip -n "$ns" addr add "$subnet.$((i + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
  limit_rate "$ns" eth0 || die "tc rejected --rate $rate on $ns"                 # sent
  limit_rate "$switch_ns" "p$i" || die "tc rejected --rate $rate on $switch_ns" # received
done

# ------------------------------------------------------------------------------ the launcher
run_dir=$(mktemp -d "/tmp/$name.XXXXXX")
hostfile=$run_dir/hostfile
agent=$run_dir/rsh-agent
for ((i = 0; i < nodes; i++)); do
  echo "${node_host[i]} slots=$ranks_per_node" >>"$hostfile"
  mkdir -p "$run_dir/${node_host[i]}"
done

# mpirun calls the agent as `AGENT HOST COMMAND...` where ssh would be: it runs COMMAND (the
# node's orted daemon, which then starts the node's ranks) inside HOST's network namespace, in
# a fresh UTS namespace named HOST, with the node's own scratch directory (TMPDIR and Open
# MPI's session directory). The host name is what matters: Open MPI names the shared-memory
# (vader) segments in /dev/shm, one directory for all namespaces, after the host and the
# node-local rank, so with one name for all nodes the ranks of different nodes map each
# other's segments and crash. A node that nodectl took down does not answer, as ssh would not
# (exit 255). With --node-disk the daemon also gets a mount namespace of its own, in which the
# node's disk directory is bind-mounted at PATH.
if [[ -n $node_disk && ! -e $node_disk ]]; then
  mkdir -p "$node_disk" || die "--node-disk $node_disk: cannot create it"
  created_disk=$node_disk
fi
{
  echo '#!/bin/sh'
  echo '# Generated by netns-cluster.sh: "ssh" into an emulated node.'
  echo 'while [ $# -gt 0 ]; do case $1 in -*) shift ;; *) break ;; esac; done'
  echo 'host=$1; shift'
  echo 'case $host in'
  for ((i = 0; i < nodes; i++)); do echo "  ${node_host[i]}) ns=${node_ns[i]} ;;"; done
  echo '  *) echo "rsh-agent: unknown node $host" >&2; exit 1 ;;'
  echo 'esac'
  echo "dir=$run_dir/\$host"
  echo 'if [ -e "$dir/down" ]; then'
  echo '  echo "ssh: connect to host $host port 22: No route to host (emulated: nodectl down)" >&2'
  echo '  exit 255'
  echo 'fi'
  if [[ -z $node_disk ]]; then
    echo 'exec ip netns exec "$ns" unshare --uts sh -c '\''
    echo "$1" > /proc/sys/kernel/hostname || exit 1
    export TMPDIR="$2" OMPI_MCA_orte_tmpdir_base="$2"
    exec sh -c "$3"'\'' sh "$host" "$dir" "$*"'
  else
    echo "disk=$node_disk"
    echo 'exec ip netns exec "$ns" unshare --uts --mount --propagation private sh -c '\''
    echo "$1" > /proc/sys/kernel/hostname || exit 1
    mount --bind "$2/disk" "$4" || exit 1
    export TMPDIR="$2" OMPI_MCA_orte_tmpdir_base="$2"
    exec sh -c "$3"'\'' sh "$host" "$dir" "$*" "$disk"'
  fi
} >"$agent"
chmod +x "$agent"
for ((i = 0; i < nodes; i++)); do mkdir -p "$run_dir/${node_host[i]}/disk"; done

# nodectl: failures on demand (see --help). It knows only this cluster's nodes.
ctl=$run_dir/nodectl
{
  echo '#!/bin/sh'
  echo '# Generated by netns-cluster.sh: take an emulated node down, bring it back.'
  echo 'usage() { echo "usage: $0 down|up|kill|status NODE" >&2; exit 2; }'
  echo '[ $# -eq 2 ] || usage'
  echo 'case $2 in'
  for ((i = 0; i < nodes; i++)); do echo "  ${node_host[i]}) ns=${node_ns[i]} ;;"; done
  echo '  *) echo "nodectl: unknown node $2 (nodes: '"${node_host[*]}"')" >&2; exit 2 ;;'
  echo 'esac'
  echo "dir=$run_dir/\$2"
  echo 'kill_all() {'
  echo '  ip netns pids "$ns" | xargs -r kill -KILL 2>/dev/null'
  echo '  i=0'
  echo '  while [ -n "$(ip netns pids "$ns")" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done'
  echo '}'
  echo 'case $1 in'
  echo '  down) touch "$dir/down"; ip -n "$ns" link set eth0 down; kill_all ;;'
  echo '  up) ip -n "$ns" link set eth0 up; rm -f "$dir/down" ;;'
  echo '  kill) kill_all ;;'
  echo '  status) if [ -e "$dir/down" ]; then echo down; else echo up; fi ;;'
  echo '  *) usage ;;'
  echo 'esac'
} >"$ctl"
chmod +x "$ctl"

mpirun_args=(
  --allow-run-as-root --oversubscribe --bind-to none
  -np $((nodes * ranks_per_node)) --hostfile "$hostfile" --map-by "ppr:$ranks_per_node:node"
  --mca plm_rsh_agent "$agent" --mca plm_rsh_no_tree_spawn 1
  --mca pml ob1 --mca btl "$btl"
  --mca btl_tcp_if_include "$subnet.0/24" --mca oob_tcp_if_include "$subnet.0/24"
  "${env_args[@]}" "${extra_mpirun_args[@]}"
  "$@"
)
log "$nodes node(s) x $ranks_per_node rank(s), link ${rate:-unlimited} ($qdisc), limit ${time_limit}s"
log "namespaces: ${created_ns[*]}; scratch $run_dir"
log "mpirun ${mpirun_args[*]}"

if ((launcher)); then
  # COMMAND runs where mpirun would, and finds the cluster in its environment: every mpirun
  # it starts reads the OMPI_MCA_* variables (the same settings as the arguments above).
  export NETNS_CLUSTER_HOSTFILE=$hostfile NETNS_CLUSTER_CTL=$ctl
  export NETNS_CLUSTER_NODES="${node_host[*]}"
  if [[ -n $node_disk ]]; then
    disks=()
    for ((i = 0; i < nodes; i++)); do disks+=("$run_dir/${node_host[i]}/disk"); done
    export NETNS_CLUSTER_NODE_DISKS="${disks[*]}"
  fi
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_plm_rsh_agent=$agent OMPI_MCA_plm_rsh_no_tree_spawn=1
  export OMPI_MCA_pml=ob1 OMPI_MCA_btl=$btl
  export OMPI_MCA_btl_tcp_if_include=$subnet.0/24 OMPI_MCA_oob_tcp_if_include=$subnet.0/24
  export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none
  if ((${#env_names[@]} > 0)); then
    OMPI_MCA_mca_base_env_list=$(
      IFS=';'
      echo "${env_names[*]}"
    )
    export OMPI_MCA_mca_base_env_list
  fi
  for ((i = 0; i < ${#mca_pairs[@]}; i += 2)); do
    export "OMPI_MCA_${mca_pairs[i]}=${mca_pairs[i + 1]}"
  done
  log "launcher: $*"
  log "nodectl: $ctl"
  timeout --kill-after=10 "$time_limit" \
    ip netns exec "$switch_ns" unshare --uts sh -c \
    'echo "$0" > /proc/sys/kernel/hostname && exec "$@"' "$name-head" "$@" &
else
  # mpirun runs in the switch namespace (it needs an address on the nodes' network for its
  # daemons to call back) with a host name of its own, so that it treats every node as
  # remote. In the background so that a signal reaches the trap at once rather than after the
  # job.
  timeout --kill-after=10 "$time_limit" \
    ip netns exec "$switch_ns" unshare --uts sh -c \
    'echo "$0" > /proc/sys/kernel/hostname && exec mpirun "$@"' "$name-head" "${mpirun_args[@]}" &
fi
job_pid=$!
rc=0
wait "$job_pid" || rc=$?
job_pid=""
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  echo "netns-cluster: the job did not finish within --time-limit $time_limit s: stopped" >&2
fi
exit "$rc"
