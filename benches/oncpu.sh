#!/usr/bin/env bash
# What watching costs in CPU time, which on this kind of machine is far steadier than the
# wall-time ratios of `cargo bench --bench overhead`: the on-CPU time of the `procwatch`
# command (all its threads) while it runs a workload, against the C proc-connector listener
# (`benches/peer/cn_listener.c`) and, when installed, `forkstat` (which, like the command,
# reads each exec's command line and writes a line per event), each listening while the
# same workload runs alone.
#
#   bash benches/oncpu.sh [ROUNDS] -- WORKLOAD [ARGS...]
#   bash benches/oncpu.sh 9 -- make -s -B -j2 -C /path/to/project
#
# The overhead bench's workloads run the same way through its binary
# (`target/release/deps/overhead-<hash> __workload forkexec 2000`, and so on), and
# `... __workload c-project 40 DIR` writes its `make` project into DIR.
#
# Each round runs, in this order: the command with its lines to a file, to /dev/null, with
# `--json` to a file, the C listener, then `forkstat -e fork,exec,exit` writing to a file.
# It prints the median, lowest and highest of each
# (milliseconds on a CPU, and context switches). Needs root, `bpftrace` and `cc`; the command
# is `target/release/procwatch` unless `PROCWATCH=<path>` names another build; with
# `PROCWATCH_BEFORE=<path>`, each round also runs that build with its lines to a file
# (`before-to-file`), to compare two builds in the same rounds. Their file names must stay
# `procwatch`: threads are recognised by name (see `benches/oncpu.bt`). `ONCPU_KEEP=1` keeps
# the temporary directory with the raw trace and the run list.
set -euo pipefail

rounds=7
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
    rounds=$1
    shift
fi
[[ ${1:-} == -- ]] && shift
if [[ $# -eq 0 ]]; then
    echo "usage: bash benches/oncpu.sh [ROUNDS] -- WORKLOAD [ARGS...]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
procwatch=${PROCWATCH:-$here/../target/release/procwatch}
before=${PROCWATCH_BEFORE:-}
for build in "$procwatch" $before; do
    if [[ $(basename "$build") != procwatch || ! -x $build ]]; then
        echo "oncpu.sh: $build is not an executable named procwatch (cargo build --release -p procwatch-cli)" >&2
        exit 2
    fi
done
for tool in bpftrace cc; do
    command -v "$tool" >/dev/null || {
        echo "oncpu.sh: $tool is not installed (apt-get install -y $tool)" >&2
        exit 2
    }
done

tmp=$(mktemp -d)
trap '[[ -z ${tracer:-} ]] || kill "$tracer" 2>/dev/null || true; [[ -n ${ONCPU_KEEP:-} ]] || rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/cn_listener" "$here/peer/cn_listener.c"

BPFTRACE_MAP_KEYS_MAX=1048576 bpftrace "$here/oncpu.bt" >"$tmp/trace" 2>"$tmp/trace.err" &
tracer=$!
for _ in $(seq 300); do
    grep -q Attaching "$tmp/trace" "$tmp/trace.err" 2>/dev/null && break
    if ! kill -0 "$tracer" 2>/dev/null; then
        echo "oncpu.sh: bpftrace stopped:" >&2
        cat "$tmp/trace" "$tmp/trace.err" >&2
        exit 1
    fi
    sleep 0.1
done
sleep 1

: >"$tmp/runs"
for round in $(seq "$rounds"); do
    if [[ -n $before ]]; then
        "$before" -- "$@" 2>"$tmp/lines" >/dev/null &
        echo "$! before-to-file" >>"$tmp/runs"
        wait $!
    fi
    "$procwatch" -- "$@" 2>"$tmp/lines" >/dev/null &
    echo "$! lines-to-file" >>"$tmp/runs"
    wait $!
    "$procwatch" -- "$@" 2>/dev/null >/dev/null &
    echo "$! lines-to-null" >>"$tmp/runs"
    wait $!
    "$procwatch" --json -- "$@" 2>/dev/null >"$tmp/json" &
    echo "$! json-to-file" >>"$tmp/runs"
    wait $!
    "$tmp/cn_listener" -b 4194304 >"$tmp/cn.out" &
    listener=$!
    until grep -q ready "$tmp/cn.out"; do sleep 0.01; done
    "$@" >/dev/null
    kill -INT "$listener"
    wait "$listener"
    echo "$listener c-listener" >>"$tmp/runs"
    if command -v forkstat >/dev/null; then
        forkstat -e fork,exec,exit >"$tmp/forkstat" 2>&1 &
        peer=$!
        # forkstat says nothing once it is subscribed: give it time.
        sleep 0.5
        "$@" >/dev/null
        sleep 0.05
        kill -INT "$peer"
        wait "$peer" || true
        echo "$peer forkstat" >>"$tmp/runs"
    fi
    echo "round $round of $rounds done" >&2
done
sleep 0.5
kill -INT "$tracer"
wait "$tracer" || true

echo "on-CPU ms and context switches per run, median (lowest-highest) over $rounds rounds: $*"
awk 'NR == FNR { mode[$1] = $2; next }
     /^EXIT/ && ($2 in mode) { print mode[$2], $3 / 1e6, $4 }' "$tmp/runs" "$tmp/trace" >"$tmp/table"
# The median, lowest and highest of column $2 of the table's rows for mode $1.
stats() {
    awk -v m="$1" -v c="$2" '$1 == m { print $c }' "$tmp/table" | sort -n |
        awk '{ v[NR] = $1 }
             END {
                 med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                 printf "%.1f (%.1f-%.1f)", med, v[1], v[NR]
             }'
}
for mode in before-to-file lines-to-file lines-to-null json-to-file c-listener forkstat; do
    grep -q " $mode\$" "$tmp/runs" || continue
    printf '%-14s %s ms, %s switches\n' "$mode" "$(stats $mode 2)" "$(stats $mode 3)"
done
