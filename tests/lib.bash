# Shared helpers for the fdguard bats suites.
#   tests/*.bats:             load lib
#   tests/integration/*.bats: load ../lib
# Every suite that starts background processes calls stop_all in teardown.
# shellcheck shell=bash

# The build directory: `make test` passes FDG_BUILD; otherwise the default
# build next to this file (not next to the suite, so that suites in
# subdirectories find the same one).
FDG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${FDG_BUILD:=$FDG_ROOT/build}"
FDG_LIB=$FDG_BUILD/libfdguard.so
FDG_BIN=$FDG_BUILD/tests
# The flood client is product code (scripts/tools/flood.c), built by make.
FDG_FLOOD=$FDG_BUILD/flood
export FDG_ROOT FDG_BUILD FDG_LIB FDG_BIN FDG_FLOOD

# Pids started by start_bg, stopped by stop_all.
FDG_PIDS=()

# The second user the suites run things as.
NOBODY=65534
# "${AS_NOBODY[@]}" CMD...: CMD as uid/gid 65534, no supplementary groups.
# shellcheck disable=SC2034 # for the suites
AS_NOBODY=(setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups --)

# Paths cleanup_paths removes (teardown).
FDG_CLEAN=()

# nobody_dir VAR: a new directory in /tmp owned by nobody (who can write
# there, as root can) into VAR; cleanup_paths removes it.
nobody_dir() {
    local d
    d=$(mktemp -d /tmp/fdguard-nobody.XXXXXX) || return 1
    FDG_CLEAN+=("$d")
    chown "$NOBODY:$NOBODY" "$d"
    printf -v "$1" '%s' "$d"
}

# cleanup_paths: removes every path in FDG_CLEAN.
cleanup_paths() {
    if ((${#FDG_CLEAN[@]})); then
        rm -rf "${FDG_CLEAN[@]}"
    fi
    FDG_CLEAN=()
}

# The sanitizer runtime that must come first in LD_PRELOAD when the shim and
# helpers are built with SANITIZE=..., or nothing.
fdg_runtime_preload() {
    local rt
    case "${FDG_SANITIZE:-}" in
    '') return 0 ;;
    address) rt=libasan.so ;;
    thread) rt=libtsan.so ;;
    undefined) rt=libubsan.so ;;
    *)
        echo "fdg_runtime_preload: unknown FDG_SANITIZE=$FDG_SANITIZE" >&2
        return 1
        ;;
    esac
    gcc -print-file-name="$rt"
}

# The LD_PRELOAD value that loads the shim (after the sanitizer runtime, which
# refuses to run unless it is first).
fdg_preload() {
    local rt
    rt=$(fdg_runtime_preload) || return 1
    if [[ -n $rt ]]; then
        printf '%s:%s\n' "$rt" "$FDG_LIB"
    else
        printf '%s\n' "$FDG_LIB"
    fi
}

# exec_clean CMD [ARGS...]: closes descriptors other than 0-2 (bats' own: fd 3
# would make bats wait for a background process; and whatever the caller
# inherited, so that CMD's table holds exactly what it opens), then execs CMD.
# It replaces the shell it runs in: call it in a subshell or with &.
exec_clean() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        if ((fd > 2)); then
            # The glob's own directory descriptor is gone by now: quiet.
            { eval "exec $fd>&-"; } 2>/dev/null || true
        fi
    done
    exec "$@"
}

# start_bg VAR CMD [ARGS...]: runs CMD (through exec_clean) in the background,
# stores its pid in VAR and registers it for stop_all. Redirections given to
# start_bg apply to CMD.
start_bg() {
    local var=$1 pid
    shift
    exec_clean "$@" &
    pid=$!
    FDG_PIDS+=("$pid")
    printf -v "$var" '%s' "$pid"
}

# fail MESSAGE...: fails the test (or the function) with MESSAGE on stderr.
fail() {
    printf '%s\n' "$*" >&2
    return 1
}

# in_ci: true in a CI run (.ci/run exports CI=true; CI=false or CI=0 is not
# one).
in_ci() {
    [[ -n ${CI:-} && $CI != false && $CI != 0 ]]
}

# unavailable WHY: the test cannot run here for want of a tool or a
# privilege: skipped, except in CI (which installs every tool and runs as
# root), where that is a failure. A skip inherent to a configuration (what a
# sanitizer cannot do) is a plain skip.
unavailable() {
    if in_ci; then
        echo "CI=$CI: $1 (under CI a missing tool or privilege fails the test)" >&2
        return 1
    fi
    skip "$1"
}

# need CMD...: every CMD is installed (an empty one stands for python3);
# otherwise unavailable.
need() {
    local c missing=()
    for c in "$@"; do
        if [[ -z $c ]] || ! command -v "$c" >/dev/null 2>&1; then
            missing+=("${c:-python3}")
        fi
    done
    ((${#missing[@]} == 0)) || unavailable "not installed: ${missing[*]}"
}

# proc_stat PID: sets PROC_STAT to the fields of /proc/PID/stat from field 3
# (state) on: PROC_STAT[N - 3] is field N of proc(5). The name (field 2) may
# hold anything, spaces, parentheses and newlines included: the fields are
# counted after its last ")". PID may be PID/task/TID.
PROC_STAT=()
proc_stat() {
    local stat=
    # (read, not $(cat): no process per call; -d '': the whole file.)
    { IFS= read -r -d '' stat <"/proc/$1/stat"; } 2>/dev/null || true
    [[ -n $stat ]] || return 1
    read -r -a PROC_STAT <<<"${stat##*) }"
}

# start_of PID: its start time in clock ticks since boot (field 22).
start_of() {
    proc_stat "$1" || return 1
    echo "${PROC_STAT[19]}"
}

# True while PID exists and is not a zombie.
fdg_alive() {
    proc_stat "$1" && [[ ${PROC_STAT[0]} != Z ]]
}

# Stops every process started with start_bg: SIGTERM to all, then each one
# as stop_bg does. Safe to call more than once.
stop_all() {
    local pid
    for pid in "${FDG_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${FDG_PIDS[@]}"; do
        stop_bg "$pid"
    done
    FDG_PIDS=()
}

# stop_bg PID: stops one process started with start_bg, now: SIGTERM, up to
# 2 s of grace (polled), then SIGKILL; reaps it.
stop_bg() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        fdg_alive "$pid" || break
        sleep 0.02
    done
    if fdg_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# wait_until 'COMMAND' [TIMEOUT_S]: polls COMMAND (evaluated) every 20 ms until
# it succeeds; fails with a message after TIMEOUT_S (default 5, fractions
# allowed) of wall-clock time. A readiness check with a hard timeout, never a
# fixed sleep.
wait_until() {
    local cmd=$1 timeout=${2:-5} end
    # EPOCHREALTIME without its dot: microseconds, fit for integer arithmetic.
    end=$((${EPOCHREALTIME/./} + $(awk -v t="$timeout" 'BEGIN { printf "%d", t * 1e6 }')))
    while :; do
        if eval "$cmd"; then
            return 0
        fi
        if ((${EPOCHREALTIME/./} >= end)); then
            break
        fi
        sleep 0.02
    done
    echo "wait_until: timed out after ${timeout}s: $cmd" >&2
    return 1
}

# wait_file FILE [TIMEOUT_S]: waits until FILE exists and is not empty.
wait_file() {
    wait_until "[[ -s '$1' ]]" "${2:-5}"
}

# cpu_ticks PID: user+system clock ticks (all threads): fields 14 and 15.
cpu_ticks() {
    proc_stat "$1" || return 1
    echo $((PROC_STAT[11] + PROC_STAT[12]))
}

# cpu_over PID SECONDS: ticks (1/100 s; see getconf CLK_TCK) PID burns over a
# window of SECONDS. The sleep here is the measurement window itself, the one
# place a fixed-length wait is legitimate: it synchronises nothing.
cpu_over() {
    local pid=$1 window=$2 t0 t1
    t0=$(cpu_ticks "$pid") || return 1
    sleep "$window"
    t1=$(cpu_ticks "$pid") || return 1
    echo $((t1 - t0))
}

# spin_probe PID SECONDS: "TICKS RUNNABLE_PCT" over a window of SECONDS:
# the CPU ticks PID burned, and the share of ~10 ms samples in which one of
# its threads was runnable (state R). A spinning loop is always runnable even
# when a loaded machine gives it little CPU, so the share tells a spin from an
# idle loop where ticks alone could not. Like cpu_over, the window is a
# measurement, not a synchronisation.
spin_probe() {
    local pid=$1 window=$2 t0 t1 end samples=0 running=0 task
    t0=$(cpu_ticks "$pid") || return 1
    # EPOCHREALTIME without its dot: microseconds, fit for integer arithmetic.
    end=$((${EPOCHREALTIME/./} + $(awk -v w="$window" 'BEGIN { printf "%d", w * 1e6 }')))
    while ((${EPOCHREALTIME/./} < end)); do
        samples=$((samples + 1))
        for task in "/proc/$pid/task"/*; do
            proc_stat "$pid/task/${task##*/}" || continue
            if [[ ${PROC_STAT[0]} == R ]]; then
                running=$((running + 1))
                break
            fi
        done
        sleep 0.01
    done
    t1=$(cpu_ticks "$pid") || return 1
    echo "$((t1 - t0)) $((samples ? running * 100 / samples : 0))"
}

# fd_count PID: descriptors PID has open.
fd_count() {
    local fds
    fds=$(ls -U "/proc/$1/fd") || return 1
    wc -l <<<"$fds" | tr -d ' '
}

# sock_count PID: sockets PID has open. Unlike fd_count it ignores the shim's
# spare (/dev/null), which comes and goes as the shim lends and re-arms it.
sock_count() {
    local fd n=0
    for fd in "/proc/$1/fd"/*; do
        if [[ $(readlink "$fd" 2>/dev/null) == socket:* ]]; then
            n=$((n + 1))
        fi
    done
    echo "$n"
}

# fd_table PID: one line with PID's descriptors and what they are, and the
# system call each of its threads is in (diagnostics for failing tests).
fd_table() {
    local fd t out=
    for fd in "/proc/$1/fd"/*; do
        out+=" ${fd##*/}=$(readlink "$fd" 2>/dev/null | cut -d: -f1)"
    done
    out+=" | syscalls:"
    for t in "/proc/$1/task"/*; do
        out+=" $(cut -d' ' -f1 "$t/syscall" 2>/dev/null)"
    done
    echo "fds:$out"
}

# fd_limit PID: its soft RLIMIT_NOFILE.
fd_limit() {
    awk '/^Max open files/ { print $4 }' "/proc/$1/limits"
}

# fd_used PID: descriptor numbers in use below its soft limit (what new
# descriptors compete for; numbers above the limit are open but unusable).
fd_used() {
    local limit fd n=0
    limit=$(fd_limit "$1") || return 1
    for fd in "/proc/$1/fd"/*; do
        fd=${fd##*/}
        if [[ $limit == unlimited ]] || ((fd < limit)); then
            n=$((n + 1))
        fi
    done
    echo "$n"
}

# fd_free PID: descriptors PID can still open.
fd_free() {
    local limit used
    limit=$(fd_limit "$1") || return 1
    used=$(fd_used "$1") || return 1
    echo $((limit - used))
}

# set_nofile PID N: sets PID's soft RLIMIT_NOFILE to N (hard unchanged).
set_nofile() {
    prlimit --pid "$1" --nofile="$2":
}

# ---- FDGUARD_STATS files (README, "Logs and counters") ----

# stats_header FILE: the text header of a stats file, NULs removed.
stats_header() {
    head -c 4096 "$1" | tr -d '\0'
}

# stats_u64 FILE INDEX: the INDEX-th (0-based) little-endian uint64 after the
# header.
stats_u64() {
    od -An -v -t u8 --endian=little -j $((4096 + 8 * $2)) -N 8 "$1" | tr -d ' '
}

# stats_counter FILE NAME: counter NAME, by its place among the header's names.
stats_counter() {
    local idx
    idx=$(stats_header "$1" | sed '1,/^counters /d' | grep -nxF -- "$2" | cut -d: -f1)
    [[ -n $idx ]] || fail "no counter $2 in $1" || return 1
    stats_u64 "$1" $((idx - 1))
}

# stats_ended FILE: the "ended" word after the N counters.
stats_ended() {
    local n
    n=$(stats_header "$1" | sed -n 's/^counters //p')
    stats_u64 "$1" "$n"
}

# ---- the output of the last run ----
# (output: set by bats' run, or by the suite.)
# shellcheck disable=SC2154

# has TEXT: the last run's output contains TEXT; otherwise shows it.
has() {
    if [[ $output != *"$1"* ]]; then
        printf 'expected "%s" in the output:\n%s\n' "$1" "$output"
        return 1
    fi
}

# field NAME: VALUE of the first word NAME=VALUE in the last run's output
# (empty if none).
field() {
    awk -v k="$1=" '{ for (i = 1; i <= NF; i++) if (index($i, k) == 1) { print substr($i, length(k) + 1); exit } }' \
        <<<"$output"
}

# ---- flood results (files $T/NAME.out written by a flood run called NAME) ----

# get KEY NAME: the value of KEY in the summary of the flood called NAME.
get() {
    sed -n "s/^flood:.* $1=\([^ ]*\).*/\1/p" "$T/$2.out"
}

# served_total: clients served by the server over every flood of the test
# (each holds its connection: the server holds that many client sockets).
served_total() {
    sed -n 's/^flood:.* served=\([0-9]*\).*/\1/p' "$T"/*.out | awk '{ n += $1 } END { print n + 0 }'
}

# below MS LIMIT: true when the (fractional) MS is below LIMIT ("none" never is).
below() {
    awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "none" && a + 0 < b + 0) }'
}

# probe NAME: asks the holding flood NAME to send its --probe on each
# connection it holds; prints its report (held=, echoed=, dead=).
probe() {
    local pid=${!1} n
    n=$(grep -c '^flood-probe:' "$T/$1.out" || true)
    kill -USR1 "$pid"
    wait_until "[[ \$(grep -c '^flood-probe:' '$T/$1.out') -gt $n ]]" 10
    grep '^flood-probe:' "$T/$1.out" | tail -n 1
}

# no_line PATTERN FILE: fails (showing the lines) if FILE has a line matching
# the extended regular expression PATTERN (case-insensitive).
no_line() {
    if grep -Ei "$1" "$2"; then
        echo "unexpected line(s) matching '$1' in $2" >&2
        return 1
    fi
}
