# Shared helpers of the integration suites (tests/integration/*.bats), which
# start real servers from the distribution's packages on loopback, take away
# their descriptors at run time and check what their clients see:
#   load ../lib
#   load common
# Every server gets a free port and its own directory under the test's
# temporary directory, is waited for by a readiness check (polled, with a
# timeout) and is stopped by teardown (it_teardown), also when a check fails.
# Figures worth keeping (CPU ticks, answer times) are printed as TAP comments
# ("# ...") through bats' fd 3, so they show in the CI log of a passing run.
# The constants and PY are used by the suites that load this file:
# shellcheck shell=bash disable=SC2034

SPIN_TICKS=60 # more than this over 2 s: the server spins (100 ticks a second is one core; margin for a loaded box)
CALM_TICKS=10 # at most this over 2 s: the server is calm
FAST_MS=100 # a shed client must have its answer within this

# The system interpreter: python3 on PATH may be a pyenv shim running another one.
if [[ -x /usr/bin/python3 ]]; then
    PY=/usr/bin/python3
else
    PY=$(command -v python3 || true)
fi

it_setup() {
    # Nothing from the caller's environment leaks into the servers.
    unset LD_PRELOAD "${!FDGUARD@}"
    T=$BATS_TEST_TMPDIR
    SRV_ENV=()
    HELD_FDS=()
    SERVERS=()
    if [[ ! -x $FDG_FLOOD || ! -f $FDG_LIB ]]; then
        echo "missing $FDG_FLOOD or $FDG_LIB: run make and make helpers" >&2
        return 1
    fi
}

it_teardown() {
    local fd name
    for fd in "${HELD_FDS[@]}"; do
        exec {fd}>&- 2>/dev/null || true
    done
    HELD_FDS=()
    stop_all
    # Shown by bats when the test failed.
    for name in "${SERVERS[@]}"; do
        echo "--- last lines of $name.log"
        tail -n 15 "$T/$name.log" 2>/dev/null | cut -c 1-200
    done
}

# need CMD...: tests/lib.bash (skipped when missing, a failure under CI).

# note TEXT: a figure for the log of a passing run (a TAP comment).
note() {
    echo "# $*" >&3
    echo "$*"
}

# TCP_TABLES: the kernel's TCP socket tables that exist here (no tcp6 without
# IPv6; mawk stops at a missing file).
TCP_TABLES=()
for _t in /proc/net/tcp /proc/net/tcp6; do
    if [[ -r $_t ]]; then
        TCP_TABLES+=("$_t")
    fi
done
unset _t

# port_used PORT: true when some TCP socket (any state, IPv4 or IPv6) has PORT
# as its local port.
port_used() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v p="$hex" 'FNR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        "${TCP_TABLES[@]}"
}

# free_port: a TCP port nothing uses, below the ephemeral range (so that no
# client connection takes it meanwhile).
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        if ! port_used "$p"; then
            echo "$p"
            return 0
        fi
    done
    echo "free_port: no free port found" >&2
    return 1
}

# listen_fd PID PORT: the descriptor number on which PID listens on TCP PORT
# (the socket's inode from /proc/net/tcp, matched in /proc/PID/fd).
listen_fd() {
    local pid=$1 hex inode fd
    hex=$(printf ':%04X' "$2")
    inode=$(awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10; exit }' \
        "${TCP_TABLES[@]}")
    [[ -n $inode ]] || return 1
    fd=$(find "/proc/$pid/fd" -lname "socket:\[$inode\]" -printf '%f\n' 2>/dev/null | head -n 1)
    [[ -n $fd ]] && echo "$fd"
}

# sockets PID: how many sockets PID has open (one find, not a readlink per
# descriptor: a loaded box forks slowly).
sockets() {
    find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l
}

# epoll_fds PID: its epoll descriptors, one a line.
epoll_fds() {
    find "/proc/$1/fd" -lname 'anon_inode:\[eventpoll\]' -printf '%f\n' 2>/dev/null
}

# up NAME MODE READY CMD [ARGS...]: starts a server (plain, or shim: the
# library preloaded) on a free port; @PORT@ in the arguments is replaced with
# it; SRV_ENV adds environment variables. Waits (10 s at most) until the
# server listens on the port itself and `READY PORT` succeeds. If the port
# was taken meanwhile (the server exits), tries another, up to 5 times.
# Sets PID and PORT; output goes to $T/NAME.log.
up() {
    local name=$1 mode=$2 ready=$3 try a
    shift 3
    local -a env=(env) cmd
    if [[ $mode == shim ]]; then
        env+=("LD_PRELOAD=$(fdg_preload)")
    fi
    env+=("${SRV_ENV[@]}")
    SERVERS+=("$name")
    for ((try = 1; try <= 5; try++)); do
        PORT=$(free_port) || return 1
        cmd=()
        for a in "$@"; do
            cmd+=("${a//@PORT@/$PORT}")
        done
        start_bg PID "${env[@]}" "${cmd[@]}" >"$T/$name.log" 2>&1
        wait_until "! fdg_alive $PID || { listen_fd $PID $PORT >/dev/null && $ready $PORT; }" 10 || true
        if fdg_alive "$PID" && listen_fd "$PID" "$PORT" >/dev/null && "$ready" "$PORT"; then
            echo "$name ($mode) up: pid $PID, port $PORT"
            return 0
        fi
        echo "$name on port $PORT did not come up (try $try):"
        tail -n 5 "$T/$name.log"
        stop_bg "$PID"
    done
    return 1
}

# lowest_free PID: the lowest descriptor number PID does not use: the number
# its next accept would get. (Not the count: a hole below, or descriptors
# inherited at high numbers, would make the count misleading.)
lowest_free() {
    local n=0
    while [[ -L /proc/$1/fd/$n ]]; do
        n=$((n + 1))
    done
    echo "$n"
}

# fd_list PID: its descriptor numbers, sorted, on one line.
fd_list() {
    # shellcheck disable=SC2012 # descriptor numbers: plain digits
    ls "/proc/$1/fd" | sort -n | tr '\n' ' '
}

# in_epoll PID FD: some epoll instance of PID has FD registered (a "tfd:" line
# in the fdinfo of one of its anon_inode:[eventpoll] descriptors).
in_epoll() {
    local pid=$1 fd=$2 e
    for e in $(epoll_fds "$pid"); do
        if grep -Eq "^tfd: +$fd " "/proc/$pid/fdinfo/$e"; then
            return 0
        fi
    done
    return 1
}

# hold VAR: opens a client connection to the server (PID, PORT) from the test
# shell itself, stores its descriptor in VAR (closed by teardown) and waits
# until the server has accepted it (one more socket in its table).
hold() {
    local fd c0
    c0=$(sockets "$PID")
    exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"
    HELD_FDS+=("$fd")
    printf -v "$1" '%s' "$fd"
    wait_until "(( \$(sockets $PID) > $c0 ))" 5
}

# ask FD DATA: sends DATA (printf escapes) on the held connection FD and
# prints the first line of the answer, without its \r (3 s at most).
ask() {
    local line
    # shellcheck disable=SC2059 # DATA is a format on purpose: its escapes
    printf "$2" >&"$1" || return 1
    IFS= read -r -t 3 line <&"$1" || return 1
    printf '%s\n' "${line%$'\r'}"
}

# say PORT DATA: a one-shot client: connects, sends DATA, prints the first
# line of the answer (3 s at most).
say() {
    (
        exec {fd}<>"/dev/tcp/127.0.0.1/$1" || exit 1
        # shellcheck disable=SC2059
        printf "$2" >&"$fd" || exit 1
        IFS= read -r -t 3 line <&"$fd" || exit 1
        printf '%s\n' "${line%$'\r'}"
    ) 2>/dev/null
}

# clients NAME N [FLOOD ARGS...]: N new clients to the server (PORT) from a
# background flood that holds them open. Sets NAME to its pid, waits for its
# summary in $T/NAME.out and prints it.
clients() {
    local name=$1 n=$2
    shift 2
    start_bg "$name" "$FDG_FLOOD" "127.0.0.1:$PORT" -n "$n" --hold 600 "$@" >"$T/$name.out"
    wait_until "grep -q '^flood:' '$T/$name.out'" 20
    echo "$name: $(grep -v '^flood-probe:' "$T/$name.out" | tr '\n' ' ')"
}

# exhaust: takes every free descriptor from the server (PID): its soft limit
# becomes its lowest unused descriptor number plus one, and one idle client
# (the flood FILL, held) takes that last number. Every number below the limit
# is then in use. Sets LIMIT.
exhaust() {
    local low
    low=$(lowest_free "$PID")
    LIMIT=$((low + 1))
    set_nofile "$PID" "$LIMIT"
    clients FILL 1 --wait-ms 100
    wait_until "(( \$(lowest_free $PID) >= $LIMIT ))" 5
    echo "exhausted: limit $LIMIT, descriptors $(fd_list "$PID")"
}

# ms_since T0: milliseconds since T0 (from date +%s%N).
ms_since() {
    echo $((($(date +%s%N) - $1) / 1000000))
}
