#!/usr/bin/env bash
# Surviving failures across two emulated hosts (see lib.sh): for each JOB argument, 4 ranks of
# tests/elastic.rs's rank program (ranks 0,1 on host 0, ranks 2,3 on host 1, torchrun-style
# variables) meet through a `ferrocoll-store` served in host 0's namespace, and play one
# scenario. The ranks write their reports into OUT/SCENARIO-VICTIMS/; this script writes each
# rank's exit status beside them (`status-R`: the code, or `sig-N`) and tests/elastic.rs
# checks them.
#
#   tests/netns/elastic.sh RANK_EXE STORE_EXE OUT JOB…     JOB = scenario:victims (e.g. kill_mid:0)
# Scenarios as in tests/elastic.rs, plus: `grow` starts a replacement on host 1 once the
# victim is gone; `store_gone` stops the store, then kills rank 3; `secret` starts no ranks,
# only a replacement that presents a wrong secret (its status must say it was refused).
# Exit: 0 when every job ran (the checks are the caller's), 1 on a setup failure, 77 skipped.
set -u
EXE=${1:?usage: elastic.sh RANK_EXE STORE_EXE OUT JOB...}
STORE_EXE=${2:?}
OUT=${3:?}
shift 3
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
if ! netns_supported; then echo "SKIP elastic: $NETNS_WHY"; exit 77; fi
trap 'netns_down' EXIT
netns_up 2 1gbit || { echo "FAIL: could not create the namespaces"; exit 1; }
PORT=$(netns_port_base)
HOSTS=(hostA hostB)

# status PID: "0".."255" or "sig-N" for a process that ended, after waiting for it.
status() {
  wait "$1"; local rc=$?
  if [ $rc -gt 128 ]; then echo "sig-$((rc - 128))"; else echo $rc; fi
}

# kill_rank PID: SIGKILL the process at the bottom of the background job PID (the rank or
# the store runs a few levels down: ip netns exec, unshare, env, timeout). Only the leaves
# are killed: each parent then reaps its child and exits, so no zombie is left to init.
kill_rank() {
  local kids
  kids=$(pgrep -P "$1")
  if [ -z "$kids" ]; then kill -KILL "$1" 2>/dev/null; return; fi
  local c
  for c in $kids; do kill_rank "$c"; done
}

run_job() {
  local scenario=$1 victims=$2 dir="$OUT/$1-${2:-none}" r pids=() store_pid
  mkdir -p "$dir"
  PORT=$((PORT + 2))
  local store="tcp://$(netns_ip 0):$PORT"
  netns_exec 0 "${HOSTS[0]}" env FERROCOLL_SECRET=job-secret \
    "$STORE_EXE" --listen "$(netns_ip 0):$PORT" >"$dir/store.log" 2>&1 &
  store_pid=$!
  local common=(FC_REPORT="$dir" FC_VICTIMS="$victims" FERROCOLL_STORE="$store"
    FERROCOLL_SOCKET_IFNAME=up0 FERROCOLL_TIMEOUT=20 FERROCOLL_HEARTBEAT_TIMEOUT=1)
  if [ "$scenario" = secret ]; then
    sleep 0.5
    netns_exec 1 "${HOSTS[1]}" env "${common[@]}" FC_ELASTIC=joiner FERROCOLL_SECRET=wrong \
      timeout 30 "$EXE" >"$dir/joiner.log" 2>&1 &
    status $! >"$dir/status-joiner"
    kill_rank "$store_pid"; wait "$store_pid" 2>/dev/null
    return 0
  fi
  for r in 0 1 2 3; do
    local h=$((r / 2))
    netns_exec $h "${HOSTS[$h]}" env "${common[@]}" FC_ELASTIC="$scenario" \
      FERROCOLL_SECRET=job-secret RANK=$r WORLD_SIZE=4 LOCAL_RANK=$((r % 2)) LOCAL_WORLD_SIZE=2 \
      timeout 60 "$EXE" >"$dir/log-$r" 2>&1 &
    pids+=($!)
  done
  if [ "$scenario" = store_gone ]; then
    sleep 1.5
    kill_rank "$store_pid"; wait "$store_pid" 2>/dev/null
    sleep 0.2
    kill_rank "${pids[3]}"
  fi
  if [ "$scenario" = grow ]; then
    local t=0
    until grep -qs victim "$dir/rank-$victims" || [ $t -ge 300 ]; do sleep 0.1; t=$((t + 1)); done
    netns_exec 1 "${HOSTS[1]}" env "${common[@]}" FC_ELASTIC=joiner FERROCOLL_SECRET=job-secret \
      timeout 60 "$EXE" >"$dir/joiner.log" 2>&1 &
    local joiner=$!
  fi
  for r in 0 1 2 3; do
    case "$scenario:,$victims," in
      stop_*:*,$r,*) continue ;;
    esac
    status "${pids[$r]}" >"$dir/status-$r"
  done
  [ "$scenario" = grow ] && status "$joiner" >"$dir/status-joiner"
  # Stopped victims: end them now (no process outlives the job).
  for r in 0 1 2 3; do
    [ -e "$dir/status-$r" ] || { kill_rank "${pids[$r]}"; wait "${pids[$r]}" 2>/dev/null; echo stopped >"$dir/status-$r"; }
  done
  kill_rank "$store_pid"; wait "$store_pid" 2>/dev/null
  return 0
}

for job in "$@"; do
  run_job "${job%%:*}" "${job#*:}"
  echo "ran $job"
done
