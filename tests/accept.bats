#!/usr/bin/env bats
# Accept relief (design.md, "Accept relief").
#
# Every scenario runs tests/helpers/srv in one of the accept-loop shapes found
# in the field, connects and holds a few clients, then takes away every free
# descriptor (prlimit on the running server) and sends new clients:
#   - without the shim the failure shows: the loop spins (lt, poll, select,
#     block, threads) or the backlog is stranded (et). These tests prove the
#     scenario can fail;
#   - with the shim the loop stays calm, new clients are rejected (message) or
#     closed within milliseconds, held clients are still served, nothing leaks,
#     and once the limit is raised new clients are served again.
# CPU is read from /proc/PID/stat over a short window: 100 ticks a second is
# one core. A spinning loop burns ~100 per spinning thread; an idle one ~0.

load lib

SPIN_TICKS=50 # more than this over 1 s: the loop spins (a core is 100)...
SPIN_PCT=90   # ...or runnable in this share of samples (a loaded machine)
CALM_TICKS=10 # at most this over 2 s: the loop is calm
FAST_MS=100   # a shed client must be answered within this

setup() {
    # The suite sets the variables it tests; nothing from the caller leaks in.
    unset LD_PRELOAD "${!FDGUARD@}"
    T=$BATS_TEST_TMPDIR
    SRV_ENV=()
    SRV_ARGS=()
    SRV_UNIX=
    if [[ ! -x $FDG_BIN/srv || ! -x $FDG_FLOOD || ! -f $FDG_LIB ]]; then
        echo "missing $FDG_BIN/srv, $FDG_FLOOD or $FDG_LIB: run make and make helpers" >&2
        return 1
    fi
}

teardown() {
    stop_all
}

# ---- scenario building blocks ------------------------------------------------

# srv_up plain|shim SHAPE [SRV ARGS...]: starts srv and waits until it listens.
# SRV_ENV adds environment variables, SRV_ARGS arguments, SRV_UNIX=1 listens
# on a unix socket.
# Sets SRV (pid) and ADDR (what flood connects to); stderr goes to $T/srv.err.
srv_up() {
    local mode=$1 shape=$2 port
    shift 2
    local -a env=(env) where=(--port 0)
    if [[ $mode == shim ]]; then
        env+=("LD_PRELOAD=$(fdg_preload)")
    fi
    env+=("${SRV_ENV[@]}")
    if [[ -n $SRV_UNIX ]]; then
        where=(--unix "$T/srv.sock")
    fi
    start_bg SRV "${env[@]}" "$FDG_BIN/srv" --shape "$shape" "${where[@]}" \
        --ready "$T/ready" "${SRV_ARGS[@]}" "$@" 2>"$T/srv.err"
    wait_file "$T/ready"
    port=$(cat "$T/ready")
    if [[ -n $SRV_UNIX ]]; then
        ADDR=unix:$port
    else
        ADDR=127.0.0.1:$port
    fi
}

# clients NAME N [FLOOD ARGS...]: N new clients from a background flood that
# holds them open (hanging ones stay in the backlog, served ones stay served).
# Sets NAME to its pid; waits for its summary in $T/NAME.out and prints it
# (bats shows it if the test fails).
clients() {
    local name=$1 n=$2
    shift 2
    start_bg "$name" "$FDG_FLOOD" "$ADDR" -n "$n" --hold 600 "$@" >"$T/$name.out"
    wait_until "grep -q '^flood:' '$T/$name.out'" 20
    echo "$name: $(grep -v '^flood-probe:' "$T/$name.out" | tr '\n' ' ')"
}

# asleep_in_accept PID: true if a thread of PID sleeps in accept or accept4
# (a running thread reads "running" in /proc, a sleeping one its syscall
# number: this architecture's, from sysno).
asleep_in_accept() {
    local t nrs
    nrs=$("$FDG_BIN/sysno" accept accept4) || return 2
    for t in "/proc/$1/task"/*; do
        if grep -qxF -- "$(cut -d' ' -f1 "$t/syscall" 2>/dev/null)" <<<"$nrs"; then
            return 0
        fi
    done
    return 1
}

# exhaust: lowers the server's soft limit to the descriptors it has open, then
# connects held clients until two single clients in a row are not served and
# no thread sleeps in accept: no descriptor is free. Why not stop at the
# limit: a thread asleep in accept() has already reserved its descriptor
# number (invisible in /proc/PID/fd, possibly above the new limit) and serves
# the next client with it. The shim never sleeps in accept (it waits in poll
# and gives such a thread a grace to take the connection), so once no thread
# sleeps there, none holds a reserved number. Why single clients: a batch
# proves nothing, a thread that is awake takes queued connections ahead of
# the woken ones. Sets LIMIT.
exhaust() {
    local i free misses=0 single=
    set_nofile "$SRV" "$(fd_count "$SRV")"
    for ((i = 0; i < 20; i++)); do
        if ((misses >= 2)) && ! asleep_in_accept "$SRV"; then
            break
        fi
        free=$(fd_free "$SRV")
        if [[ -n $single ]] || ((free < 1)); then
            free=1
        fi
        clients "PRIME$i" "$free" --wait-ms 300
        if [[ $(get served "PRIME$i") == "$free" ]]; then
            misses=0
        elif ((free == 1)); then
            misses=$((misses + 1))
        fi
        # Once a client was not served, probe with single clients only.
        if [[ $(get served "PRIME$i") != "$free" ]]; then
            single=1
        fi
    done
    if ((misses < 2)) || asleep_in_accept "$SRV"; then
        echo "exhaust: the server never ran out of descriptors; $(fd_table "$SRV")" >&2
        return 1
    fi
    LIMIT=$(fd_limit "$SRV")
    echo "exhausted at limit $LIMIT; $(fd_table "$SRV")"
}

# one_warning VAR: exactly one line of srv's stderr names VAR, and it is a
# shim warning.
one_warning() {
    echo "srv stderr:"
    cat "$T/srv.err"
    [[ $(grep -cw "$1" "$T/srv.err") == 1 ]]
    grep -w "$1" "$T/srv.err" | grep -q '^fdguard\['
}

# ---- the failure, without the shim -------------------------------------------

# spins MODE SHAPE: exhausted, new clients hang and the accept loop spins.
spins() {
    local ticks
    srv_up "$1" "$2"
    clients HELD 3
    [[ $(get served HELD) == 3 ]]
    exhaust
    clients NEW 3 --wait-ms 300
    [[ $(get hanging NEW) == 3 ]]
    read -r ticks pct < <(spin_probe "$SRV" 1)
    echo "over 1 s: $ticks ticks, runnable in $pct% of samples"
    ((ticks > SPIN_TICKS || pct >= SPIN_PCT))
}

# strands MODE SHAPE: exhausted, the edge-triggered loop does not spin but new
# clients rot in the backlog.
strands() {
    local ticks
    srv_up "$1" "$2"
    clients HELD 3
    exhaust
    clients NEW 3 --wait-ms 300
    [[ $(get hanging NEW) == 3 ]]
    ticks=$(cpu_over "$SRV" 1)
    echo "ticks over 1 s: $ticks"
    ((ticks <= CALM_TICKS))
}

@test "lt without the shim: EMFILE spins the loop, clients hang" {
    spins plain lt
}

@test "et without the shim: EMFILE strands the backlog, clients hang" {
    strands plain et
}

@test "poll without the shim: EMFILE spins the loop, clients hang" {
    spins plain poll
}

@test "select without the shim: EMFILE spins the loop, clients hang" {
    spins plain select
}

@test "block without the shim: the accept loop spins, clients hang" {
    spins plain block
}

@test "threads without the shim: every accept thread spins, clients hang" {
    spins plain threads
}

@test "unix lt without the shim: EMFILE spins the loop, clients hang" {
    SRV_UNIX=1
    spins plain lt
}

@test "unix et without the shim: EMFILE strands the backlog, clients hang" {
    SRV_UNIX=1
    strands plain et
}

# ---- relief, with the shim ---------------------------------------------------

# relieved SHAPE [MSG]: the whole contract at exhaustion. With MSG, shed
# clients must read it (flood reports its first line, BUSY); without, they see
# an orderly close. PROBES: how many times the held clients are probed (each
# time all must answer).
relieved() {
    local shape=$1 msg=${2:-} ticks i
    if [[ -n $msg ]]; then
        SRV_ENV+=("FDGUARD_REJECT_MSG=$msg")
    fi
    srv_up shim "$shape"
    clients HELD 3
    [[ $(get served HELD) == 3 ]]
    exhaust

    clients NEW 5
    if [[ -n $msg ]]; then
        [[ $(get rejected NEW) == 5 ]]
        grep -qx 'rejected-text: BUSY' "$T/NEW.out"
    else
        [[ $(get closed NEW) == 5 ]]
    fi
    below "$(get answer_ms_max NEW)" "$FAST_MS"

    ticks=$(cpu_over "$SRV" 2)
    echo "ticks over 2 s: $ticks"
    ((ticks <= CALM_TICKS))

    # Clients connected before the exhaustion are still served.
    for ((i = 0; i < ${PROBES:-1}; i++)); do
        probe HELD | grep -q 'held=3 echoed=3 '
    done
    # A non-blocking listener's caller never sees the error (EAGAIN). A
    # blocking listener's caller sees the real call's EMFILE when something
    # was pending at entry (after it was shed), and nothing else.
    if [[ $shape == @(block|threads) || " ${SRV_ARGS[*]} " == *' --blocking-listener '* ]]; then
        if grep '^srv: accept:' "$T/srv.err" | grep -v 'Too many open files'; then
            echo "accept errors other than EMFILE in $T/srv.err" >&2
            return 1
        fi
    else
        no_line '^srv: accept:' "$T/srv.err"
    fi

    # Room again: new clients are served.
    set_nofile "$SRV" $((LIMIT + 16))
    clients AFTER 3 --wait-ms 2000
    [[ $(get served AFTER) == 3 ]]
}

@test "lt with the shim: shed with a message, fast, no spin; held clients served; recovers" {
    relieved lt 'BUSY\r\n'
}

@test "et with the shim: backlog shed (orderly close), no stranding; recovers" {
    relieved et
}

@test "poll with the shim: shed with a message, no spin; recovers" {
    relieved poll 'BUSY\r\n'
}

@test "select with the shim: backlog shed (orderly close), no spin; recovers" {
    relieved select
}

@test "block with the shim: shed with a message while accept keeps waiting; recovers" {
    relieved block 'BUSY\r\n'
}

@test "threads with the shim: four blocked acceptors, shed (orderly close), no spin; recovers" {
    relieved threads
}

# Case 3 of issue 10: a poll, select or epoll loop that calls its blocking
# listener only when readable. The real call fails at once; a relief that
# waited in accept for the next client would freeze the loop (its held
# clients unanswered).
@test "poll with a blocking listener without the shim: EMFILE spins the loop, clients hang" {
    SRV_ARGS=(--blocking-listener)
    spins plain poll
    probe HELD | grep -q 'held=3 echoed=3 '
}

@test "poll with a blocking listener with the shim: shed, no spin, the loop answers its clients 20 times of 20; recovers" {
    SRV_ARGS=(--blocking-listener)
    PROBES=20 relieved poll 'BUSY\r\n'
}

@test "select with a blocking listener without the shim: EMFILE spins the loop, clients hang" {
    SRV_ARGS=(--blocking-listener)
    spins plain select
    probe HELD | grep -q 'held=3 echoed=3 '
}

@test "select with a blocking listener with the shim: shed, no spin, the loop answers its clients; recovers" {
    SRV_ARGS=(--blocking-listener)
    PROBES=5 relieved select
}

@test "lt with a blocking listener without the shim: EMFILE spins the loop, clients hang" {
    SRV_ARGS=(--blocking-listener)
    spins plain lt
    probe HELD | grep -q 'held=3 echoed=3 '
}

@test "lt with a blocking listener with the shim: shed, no spin, the loop answers its clients; recovers" {
    SRV_ARGS=(--blocking-listener)
    PROBES=5 relieved lt 'BUSY\r\n'
}

@test "unix lt with the shim: shed with a message, no spin; recovers" {
    SRV_UNIX=1
    relieved lt 'BUSY\r\n'
}

@test "unix et with the shim: backlog shed (orderly close); recovers" {
    SRV_UNIX=1
    relieved et
}

# ---- a shed client reads the whole message, then an orderly end -------------

# reads ADDR MSG: 10 clients each that send nothing, a request ("PING\r\n")
# and a request larger than one read (10 KiB), then read until the end
# (2 s at most). Prints "KIND whole_then_eof=N reset=N partial=N hang=N".
reads() {
    /usr/bin/python3 - "$1" "$2" <<'PY'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
msg = sys.argv[2].encode()
for kind, payload in (("silent", b""), ("request", b"PING\r\n"), ("large", b"x" * 10240)):
    counts = {"whole_then_eof": 0, "reset": 0, "partial": 0, "hang": 0}
    for _ in range(10):
        c = socket.create_connection((host, int(port)))
        c.settimeout(2)
        if payload:
            c.sendall(payload)
        got, end = b"", None
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    end = "eof"
                    break
                got += d
        except ConnectionResetError:
            end = "reset"
        except socket.timeout:
            end = "hang"
        c.close()
        if end == "hang":
            counts["hang"] += 1
        elif got != msg:
            counts["partial"] += 1
        else:
            counts["whole_then_eof" if end == "eof" else "reset"] += 1
        time.sleep(0.01)
    print(kind, " ".join(f"{k}={v}" for k, v in counts.items()))
PY
}

# shed_reads SHAPE: at exhaustion every shed client, whatever it sent, reads
# the whole reject message and then EOF: the close is orderly (a reset could
# discard the message on its way); without the shim each one hangs.
shed_reads() {
    local msg='-ERR max number of clients reached, try again later (fdguard)' out
    [[ -x /usr/bin/python3 ]] || skip "no /usr/bin/python3"
    SRV_ENV+=("FDGUARD_REJECT_MSG=$msg")
    srv_up plain "$1"
    clients HELD 2
    exhaust
    out=$(reads "$ADDR" "$msg")
    echo "without the shim: $out"
    [[ $(grep -c 'whole_then_eof=0 reset=0 partial=0 hang=10' <<<"$out") == 3 ]]
    stop_all
    rm -f "$T/ready"
    srv_up shim "$1"
    clients HELD 2
    exhaust
    out=$(reads "$ADDR" "$msg")
    echo "with the shim: $out"
    [[ $(grep -c 'whole_then_eof=10 reset=0 partial=0 hang=0' <<<"$out") == 3 ]]
}

@test "lt: every shed client reads the whole message, then EOF (silent, a request, 10 KiB sent)" {
    shed_reads lt
}

@test "et: every shed client reads the whole message, then EOF (silent, a request, 10 KiB sent)" {
    shed_reads et
}

# ---- no descriptor leaks over 1,000 shed cycles ------------------------------

# no_leak SHAPE: 1,000 connections shed at exhaustion; the descriptor count
# is what it was before (the spare is back in place once the flood is over,
# whatever thread shed last).
no_leak() {
    local shape=$1 before after
    SRV_ENV+=('FDGUARD_REJECT_MSG=BUSY\r\n')
    srv_up shim "$shape" --backlog 1024
    clients HELD 3
    exhaust
    # A first shed cycle puts the shim in its steady state.
    clients WARM 1
    [[ $(get rejected WARM) == 1 ]]
    before=$(fd_count "$SRV")
    fd_table "$SRV"
    "$FDG_FLOOD" "$ADDR" -n 1000 --wait-ms 10000 >"$T/MANY.out"
    cat "$T/MANY.out"
    fd_table "$SRV"
    [[ $(get rejected MANY) == 1000 ]]
    wait_until "(( \$(fd_count $SRV) == $before ))" 3 || true
    after=$(fd_count "$SRV")
    echo "descriptors before=$before after=$after limit=$LIMIT"
    ((after == before))
    probe HELD | grep -q 'held=3 echoed=3 '
}

@test "lt: no descriptor leak across 1,000 shed cycles" {
    no_leak lt
}

@test "et: no descriptor leak across 1,000 shed cycles" {
    no_leak et
}

@test "poll: no descriptor leak across 1,000 shed cycles" {
    no_leak poll
}

@test "select: no descriptor leak across 1,000 shed cycles" {
    no_leak select
}

@test "block: no descriptor leak across 1,000 shed cycles" {
    no_leak block
}

@test "threads: no descriptor leak across 1,000 shed cycles" {
    no_leak threads
}

@test "unix lt: no descriptor leak across 1,000 shed cycles" {
    SRV_UNIX=1
    no_leak lt
}

# ---- never shed when there is room -------------------------------------------

# server_fd NAME: the number the server gave the one connection of the
# flood NAME (its local port is the peer port of the server's socket).
server_fd() {
    local port=${ADDR##*:} pid=${!1} cport
    cport=$(ss -Htnp state established "( dport = :$port )" |
        awk -v p="pid=$pid," 'index($0, p) { n = split($3, a, ":"); print a[n] }')
    [[ $cport =~ ^[0-9]+$ ]] || return 1
    ss -Htnp state established "( sport = :$port and dport = :$cport )" |
        sed -n "s/.*pid=$SRV,fd=\([0-9]*\).*/\1/p"
}

# below_limit: the name of a flood holding one served connection whose
# number in the server is below its (lowered) limit. A thread asleep in
# accept reserved its number before the limit was lowered, so with several
# acceptor threads a client may hold a number above it: closing that one
# frees no slot the kernel will hand out, with or without the shim.
below_limit() {
    local f name fd
    for f in "$T"/*.out; do
        name=${f##*/} name=${name%.out}
        [[ $(get n "$name") == 1 && $(get served "$name") == 1 ]] || continue
        fd=$(server_fd "$name") || continue
        echo "$name: server fd $fd, limit $LIMIT" >&2
        if [[ -n $fd ]] && ((fd < LIMIT)); then
            echo "$name"
            return 0
        fi
    done
    return 1
}

# room SHAPE: exhausted and shedding; one held client leaves (the server closes
# it: one slot free); the next client must be served, the one after shed.
room() {
    local held one
    SRV_ENV+=('FDGUARD_REJECT_MSG=BUSY\r\n')
    srv_up shim "$1"
    clients HELD 2
    clients ONE 1
    exhaust
    clients NEW1 1
    [[ $(get rejected NEW1) == 1 ]]
    one=$(below_limit) || fail "no served client holds a number below the limit $LIMIT"
    # Synchronise on the server closing that client's socket, counting
    # sockets (the spare comes and goes). First the count with every client
    # that is not held gone: NEW1 read its message and EOF at the shutdown,
    # before the shim closed its socket, and under a slow runtime (TSan)
    # that close can come after the one we wait for.
    held=$((1 + $(served_total)))
    wait_until "(( \$(sock_count $SRV) == $held ))" 5
    stop_bg "${!one}"
    wait_until "(( \$(sock_count $SRV) == $held - 1 ))" 5
    # The first client after the slot was freed is served, whatever thread
    # the kernel wakes: relief holds no slot while it waits.
    clients NEW2 1 --wait-ms 2000
    [[ $(get served NEW2) == 1 ]]
    clients NEW3 1
    [[ $(get rejected NEW3) == 1 ]]
}

@test "lt: a slot freed while shedding goes to the next client (served, not shed)" {
    room lt
}

@test "block: room appearing while the shim waits in accept is handed to the app" {
    room block
}

@test "threads: room appearing while acceptors wait is handed to the app" {
    room threads
}

# ---- variables ---------------------------------------------------------------

@test "FDGUARD_HEADROOM=5: serves while 5 descriptors would remain free, then sheds; no leak" {
    local before after ticks
    SRV_ENV+=(FDGUARD_HEADROOM=5 'FDGUARD_REJECT_MSG=BUSY\r\n')
    srv_up shim lt --backlog 1024
    clients HELD 3
    [[ $(get served HELD) == 3 ]]
    set_nofile "$SRV" $(($(fd_count "$SRV") + 10))
    [[ $(fd_free "$SRV") == 10 ]]
    clients NEW 10
    [[ $(get served NEW) == 5 ]]
    [[ $(get rejected NEW) == 5 ]]
    [[ $(fd_free "$SRV") == 5 ]]
    # Headroom shedding happens with descriptors free: a leak would show.
    before=$(fd_count "$SRV")
    "$FDG_FLOOD" "$ADDR" -n 1000 --wait-ms 10000 >"$T/MANY.out"
    cat "$T/MANY.out"
    [[ $(get rejected MANY) == 1000 ]]
    after=$(fd_count "$SRV")
    echo "descriptors before=$before after=$after"
    [[ $after == "$before" ]]
    ticks=$(cpu_over "$SRV" 2)
    echo "ticks over 2 s: $ticks"
    ((ticks <= CALM_TICKS))
    probe NEW | grep -q 'held=5 echoed=5 '
}

@test "FDGUARD_ACCEPT_ERRNO=EMFILE: the loop sees EMFILE after the shed, and does not spin" {
    local ticks
    SRV_ENV+=(FDGUARD_ACCEPT_ERRNO=EMFILE 'FDGUARD_REJECT_MSG=BUSY\r\n')
    srv_up shim lt
    clients HELD 3
    exhaust
    clients NEW 3
    [[ $(get rejected NEW) == 3 ]]
    grep -q '^srv: accept: Too many open files' "$T/srv.err"
    ticks=$(cpu_over "$SRV" 2)
    echo "ticks over 2 s: $ticks"
    ((ticks <= CALM_TICKS))
}

@test "FDGUARD_ACCEPT=maybe: one warning line, default (on) used, the server runs" {
    SRV_ENV+=(FDGUARD_ACCEPT=maybe 'FDGUARD_REJECT_MSG=BUSY\r\n')
    srv_up shim lt
    clients HELD 3
    [[ $(get served HELD) == 3 ]]
    exhaust
    clients NEW 3
    [[ $(get rejected NEW) == 3 ]]
    one_warning FDGUARD_ACCEPT
}

@test "FDGUARD_HEADROOM=-3: one warning line, default (0) used, the server runs" {
    SRV_ENV+=(FDGUARD_HEADROOM=-3 'FDGUARD_REJECT_MSG=BUSY\r\n')
    srv_up shim lt
    clients HELD 3
    set_nofile "$SRV" $(($(fd_count "$SRV") + 3))
    clients FILL 3
    [[ $(get served FILL) == 3 ]] # no headroom kept: all three slots used
    clients NEW 3
    [[ $(get rejected NEW) == 3 ]]
    one_warning FDGUARD_HEADROOM
}

@test "FDGUARD_REJECT_MSG with a bad escape: one warning line, no message (orderly close)" {
    SRV_ENV+=('FDGUARD_REJECT_MSG=BUSY\q')
    srv_up shim lt
    clients HELD 3
    exhaust
    clients NEW 3
    [[ $(get closed NEW) == 3 ]]
    one_warning FDGUARD_REJECT_MSG
}

# ---- what a successful accept costs -------------------------------------------

# loop_calls [VAR=VALUE...]: system calls acceptloop's 200 accepts make (the
# calls between its markers), under the shim with those variables, or without
# it (no arguments and SHIM unset).
loop_calls() {
    local out=$T/loop.trace env=()
    [[ -n ${SHIM:-} ]] && env=(LD_PRELOAD="$(fdg_preload)" "$@")
    timeout -k 2 60 strace -qq -o "$out" env "${env[@]}" "$FDG_BIN/acceptloop" 200 >/dev/null 2>"$T/loop.err"
    awk '/^getppid/ { n++; next } n == 1 { c++ } END { print c + 0 }' "$out"
}

@test "a successful accept costs no system call of the shim's, whatever FDGUARD_LOG is (a refused file, syslog without a socket)" {
    need strace
    [[ -z ${FDG_SANITIZE:-} ]] || skip "sanitizer runtimes make their own system calls"
    local bare stderr refused syslog
    bare=$(SHIM='' loop_calls)
    stderr=$(SHIM=1 loop_calls)
    mkdir "$T/dir"
    refused=$(SHIM=1 loop_calls FDGUARD_LOG="$T/dir") # a directory: refused
    grep -q "cannot use the file" "$T/loop.err"
    echo "# 200 accepts: $bare calls without the shim, $stderr with, $refused with FDGUARD_LOG refused" >&3
    ((bare == 1000)) # socket, connect, accept, close, close
    ((stderr == bare))
    ((refused == bare))
    if [[ ! -e /dev/log ]]; then
        syslog=$(SHIM=1 loop_calls FDGUARD_LOG=syslog)
        echo "# and $syslog with FDGUARD_LOG=syslog, no /dev/log" >&3
        ((syslog == bare))
    fi
}

# ---- inertness and pass-through ----------------------------------------------

@test "inert: sh -c 'ls /proc/self/fd' lists the same with and without the shim" {
    local rt without with
    if [[ ${FDG_SANITIZE:-} == thread ]]; then
        skip "the TSan runtime crashes uninstrumented programs (sh) it is preloaded into"
    fi
    rt=$(fdg_runtime_preload)
    if [[ -n $rt ]]; then
        without=$(env LD_PRELOAD="$rt" sh -c 'ls /proc/self/fd' 2>&1)
    else
        without=$(sh -c 'ls /proc/self/fd' 2>&1)
    fi
    with=$(env LD_PRELOAD="$(fdg_preload)" sh -c 'ls /proc/self/fd' 2>&1)
    echo "without: $without"
    echo "with:    $with"
    [[ $with == "$without" ]]
}

@test "FDGUARD=off: pure pass-through, the loop spins as without the shim" {
    SRV_ENV+=(FDGUARD=off 'FDGUARD_REJECT_MSG=BUSY\r\n')
    spins shim lt
    no_line '^fdguard\[' "$T/srv.err"
}

@test "FDGUARD_ONLY=someotherprog: srv is not guarded, the loop spins" {
    SRV_ENV+=(FDGUARD_ONLY=someotherprog 'FDGUARD_REJECT_MSG=BUSY\r\n')
    spins shim lt
    no_line '^fdguard\[' "$T/srv.err"
}

@test "FDGUARD_ACCEPT=off: accept relief disabled, the loop spins" {
    SRV_ENV+=(FDGUARD_ACCEPT=off 'FDGUARD_REJECT_MSG=BUSY\r\n')
    spins shim lt
}

@test "FDGUARD_ONLY=flood,srv: srv is guarded" {
    SRV_ENV+=("FDGUARD_ONLY=flood,srv")
    srv_up shim lt
    clients HELD 3
    exhaust
    clients NEW 3
    [[ $(get closed NEW) == 3 ]]
}
