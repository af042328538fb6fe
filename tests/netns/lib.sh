# shellcheck shell=bash
# Emulated hosts on one machine: network namespaces joined through a bridge, each "host" with
# its own hostname (UTS namespace), one host's uplink optionally shaped with tbf.
#
#   source tests/netns/lib.sh
#   netns_supported || { echo "skip: $NETNS_WHY"; exit 0; }
#   netns_up 2 1gbit          # hosts 0..1; host 0's uplink shaped to 1 Gbit/s each way
#   netns_exec 0 hostA cmd…   # run cmd in host 0's namespaces with hostname hostA
#   netns_bytes 0 tx          # bytes host 0 sent on its uplink
#   netns_down
#
# Layout (prefix $NETNS_PFX, default fc<pid>, so concurrent users do not collide):
#   ${PFX}sw            switch namespace holding bridge "br0"
#   ${PFX}h<i>          host i: interface "up0" with 10.78.0.<i+1>/24, plus lo
#   ${PFX}v<i>          the switch end of host i's veth pair, enslaved to br0
# A rate given to netns_up shapes host 0's link in both directions (tbf on the egress of
# each end): traffic between host 0 and any other host crosses it. With RATE_ALL=1 every
# host's link is shaped. Namespaces have no route outside 10.78.0.0/24.
#
# Every function returns non-zero on failure; netns_down is idempotent and is what callers
# put in their EXIT trap.

NETNS_PFX=${NETNS_PFX:-fc$$}
NETNS_SUBNET=10.78.0
NETNS_HOSTS=0
NETNS_WHY=""

# True when this process may create namespaces (root, iproute2, unshare). Sets NETNS_WHY.
netns_supported() {
  if [ "$(id -u)" != 0 ]; then NETNS_WHY="not root: cannot create network namespaces"; return 1; fi
  for t in ip tc unshare; do
    command -v $t >/dev/null 2>&1 || { NETNS_WHY="'$t' is not installed"; return 1; }
  done
  local probe="${NETNS_PFX}probe"
  if ! ip netns add "$probe" 2>/dev/null; then
    NETNS_WHY="'ip netns add' refused (no CAP_SYS_ADMIN in this container?)"; return 1
  fi
  ip netns del "$probe"
  if ! unshare --uts true 2>/dev/null; then NETNS_WHY="'unshare --uts' refused"; return 1; fi
  return 0
}

# The IPv4 address of host $1.
netns_ip() { echo "$NETNS_SUBNET.$(($1 + 1))"; }

# netns_up N [RATE]: create N hosts on one bridge; RATE (e.g. 1gbit) shapes host 0's link.
netns_up() {
  local n=$1 rate=${2:-} i sw="${NETNS_PFX}sw"
  NETNS_HOSTS=$n
  ip netns add "$sw" || return 1
  ip -n "$sw" link add br0 type bridge || return 1
  ip -n "$sw" link set br0 up
  ip -n "$sw" link set lo up
  for ((i = 0; i < n; i++)); do
    local h="${NETNS_PFX}h$i" v="${NETNS_PFX}v$i"
    ip netns add "$h" || return 1
    ip link add up0 netns "$h" type veth peer name "$v" netns "$sw" || return 1
    ip -n "$sw" link set "$v" master br0
    ip -n "$sw" link set "$v" up
    ip -n "$h" addr add "$(netns_ip "$i")/24" dev up0
    ip -n "$h" link set lo up
    ip -n "$h" link set up0 up
    if [ -n "$rate" ] && { [ "$i" = 0 ] || [ "${RATE_ALL:-0}" = 1 ]; }; then
      # burst must cover at least one timer tick of traffic at this rate (1 Gbit: ~125 KB/ms).
      ip netns exec "$h" tc qdisc replace dev up0 root tbf rate "$rate" burst 256kb latency 20ms || return 1
      ip netns exec "$sw" tc qdisc replace dev "$v" root tbf rate "$rate" burst 256kb latency 20ms || return 1
    fi
  done
  # The bridge forwards immediately (no STP learning delay on a fresh bridge with no loops).
  ip -n "$sw" link set br0 type bridge stp_state 0 forward_delay 0 2>/dev/null || true
  # Wait until every uplink reports carrier (veth pairs come up within milliseconds).
  local tries=0
  for ((i = 0; i < n; i++)); do
    while [ "$(ip netns exec "${NETNS_PFX}h$i" cat /sys/class/net/up0/operstate)" != up ]; do
      tries=$((tries + 1)); [ $tries -gt 50 ] && return 1
      sleep 0.1
    done
  done
  return 0
}

# netns_down: remove every namespace with this prefix (idempotent).
netns_down() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NETNS_PFX}" ); do
    ip netns del "$ns" 2>/dev/null
  done
  return 0
}

# netns_exec I HOSTNAME CMD…: run CMD inside host I with its own UTS namespace and hostname.
# The mount namespace (hence /dev/shm) is shared: what keeps "hosts" apart for shared memory
# is the host identity ferrocoll derives from the hostname.
netns_exec() {
  local i=$1 name=$2; shift 2
  ip netns exec "${NETNS_PFX}h$i" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$name" "$@"
}

# netns_bytes I tx|rx: bytes host I sent (tx) or received (rx) on its uplink so far.
netns_bytes() {
  ip netns exec "${NETNS_PFX}h$1" cat "/sys/class/net/up0/statistics/$2_bytes"
}

# netns_port_base: a first port for the jobs of a script, below this machine's ephemeral
# range (where a live connection's local port would make a listener's bind fail), spread by
# the script's pid so that scripts running at once rarely meet; a script adds a few hundred
# at most (and netns_tcp_rate uses the base + 900).
netns_port_base() {
  local low
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null) || low=32768
  [ "${low:-0}" -gt 12000 ] 2>/dev/null || low=32768
  echo $((10000 + $$ % (low - 12000)))
}

# netns_tcp_rate FROM TO [MIB]: steady-state TCP payload rate, GB/s, of one stream from host
# FROM to host TO (what iperf3 reports, without needing iperf3): python3 sends MIB MiB
# (default 96); the receiver times the bytes after the first quarter, so TCP's slow start
# and the token bucket's initial burst are left out. Prints the rate; non-zero on failure.
netns_tcp_rate() {
  local from=$1 to=$2 mib=${3:-96} port out
  port=$(( $(netns_port_base) + 900 ))
  command -v python3 >/dev/null 2>&1 || return 1
  out=$(mktemp)
  ip netns exec "${NETNS_PFX}h$to" timeout 60 python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
c, _ = s.accept(); total = int(sys.argv[3]) << 20; skip = total // 4; n = 0; t0 = None
buf = bytearray(1 << 20)
while n < total:
    k = c.recv_into(buf)
    if not k: break
    n += k
    if t0 is None and n >= skip: t0, n0 = time.perf_counter(), n
print("%.5f" % ((n - n0) / (time.perf_counter() - t0) / 1e9))
' "$(netns_ip "$to")" "$port" "$mib" >"$out" &
  local srv=$!
  # The server is ready when its port accepts; the client retries for up to 5 s.
  ip netns exec "${NETNS_PFX}h$from" timeout 60 python3 -c '
import socket, sys, time
for _ in range(100):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2]))); break
    except OSError: time.sleep(0.05)
else: sys.exit(1)
chunk = b"\0" * (1 << 20)
for _ in range(int(sys.argv[3])): s.sendall(chunk)
s.close()
' "$(netns_ip "$to")" "$port" "$mib" || { kill $srv 2>/dev/null; rm -f "$out"; return 1; }
  wait $srv || { rm -f "$out"; return 1; }
  cat "$out"; rm -f "$out"
}
