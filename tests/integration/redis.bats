#!/usr/bin/env bats
# redis-server (the distribution's package) at descriptor exhaustion, through
# a fork storm, and under connection churn; each scenario without and with
# the shim.
#
# Exhaustion: two clients connect and are served, then the running server's
# soft limit drops to its lowest unused descriptor number plus one and an idle
# client takes that last slot (prlimit, as an operator's mistake or a leak
# would). Five new clients send PING:
#   - without the shim they hang in the backlog while redis' level-triggered
#     event loop spins on EMFILE (and logs a line each time);
#   - with the shim they read redis' own refusal text within milliseconds
#     (FDGUARD_REJECT_MSG), the loop sleeps, the two clients connected before
#     keep working, and raising the limit again brings PONG back.

load ../lib
load common

REDIS_MSG='-ERR max number of clients reached\r\n'

setup() {
    it_setup
    need redis-server redis-cli redis-benchmark
}

teardown() {
    it_teardown
}

redis_ready() {
    [[ $(redis-cli -p "$1" ping 2>/dev/null) == PONG ]]
}

# redis_up MODE [REDIS ARGS...]: PID, PORT; its files in $T/redis.
redis_up() {
    local mode=$1
    shift
    mkdir -p "$T/redis"
    up redis "$mode" redis_ready redis-server --port @PORT@ --bind 127.0.0.1 --save '' \
        --appendonly no --dir "$T/redis" --daemonize no "$@"
}

# ---- exhaustion ----------------------------------------------------------------

exhaustion() {
    local mode=$1 h1 h2 ticks t0 cli cli_ms lines
    if [[ $mode == shim ]]; then
        SRV_ENV+=("FDGUARD_REJECT_MSG=$REDIS_MSG")
    fi
    redis_up "$mode"
    hold h1
    hold h2
    [[ $(ask "$h1" 'PING\r\n') == +PONG ]]
    [[ $(ask "$h2" 'PING\r\n') == +PONG ]]
    exhaust

    clients NEW 5 --send 'PING\r\n' --reject -ERR --wait-ms 300
    ticks=$(cpu_over "$PID" 2)
    echo "redis CPU over 2 s at exhaustion: $ticks ticks"
    t0=$(date +%s%N)
    cli=$(timeout 1 redis-cli -p "$PORT" ping 2>&1) || true
    cli_ms=$(ms_since "$t0")
    echo "redis-cli ping at exhaustion (${cli_ms} ms): '$cli'"

    if [[ $mode == plain ]]; then
        [[ $(get hanging NEW) == 5 ]]
        ((ticks > SPIN_TICKS))
        [[ -z $cli ]] # it hung until timeout killed it
        lines=$(grep -c 'Too many open files' "$T/redis.log" || true)
        note "redis without the shim: ${ticks} ticks over 2 s at exhaustion;" \
            "new clients: $(get hanging NEW)/5 hanging after 300 ms; redis-cli ping hung (killed after ${cli_ms} ms);" \
            "$lines 'Too many open files' log lines so far"
    else
        [[ $(get rejected NEW) == 5 ]]
        grep -qx 'rejected-text: -ERR max number of clients reached' "$T/NEW.out"
        below "$(get answer_ms_max NEW)" "$FAST_MS"
        ((ticks <= CALM_TICKS))
        [[ $cli == *'ERR max number of clients reached'* ]]
        ((cli_ms < 1000))
        note "redis with the shim: ${ticks} ticks over 2 s at exhaustion;" \
            "new clients: $(get rejected NEW)/5 read '-ERR max number of clients reached'," \
            "answer p50 $(get answer_ms_p50 NEW) ms, max $(get answer_ms_max NEW) ms;" \
            "redis-cli ping printed the error after ${cli_ms} ms"
    fi

    # The clients connected before the exhaustion are still served.
    [[ $(ask "$h1" 'PING\r\n') == +PONG ]]
    [[ $(ask "$h2" 'PING\r\n') == +PONG ]]

    # Room again: a new client is served.
    set_nofile "$PID" $((LIMIT + 64))
    wait_until "redis_ready $PORT" 5
    clients AFTER 3 --send 'PING\r\n' --reject -ERR --wait-ms 2000
    [[ $(get served AFTER) == 3 ]]
}

@test "redis without the shim: EMFILE spins the event loop, new clients hang" {
    exhaustion plain
}

@test "redis with the shim: shed clients read redis' own error fast, no spin, held clients served, PONG after the limit is raised" {
    exhaustion shim
}

# ---- fork: BGSAVE and BGREWRITEAOF -------------------------------------------------

# redis_idle PORT: no background save or rewrite in progress or scheduled
# (the child has exited and been reaped).
redis_idle() {
    local info
    info=$(redis-cli -p "$1" info persistence | tr -d '\r')
    grep -qx 'rdb_bgsave_in_progress:0' <<<"$info" &&
        grep -qx 'aof_rewrite_in_progress:0' <<<"$info" &&
        grep -qx 'aof_rewrite_scheduled:0' <<<"$info"
}

# The children redis forks close the listening socket they inherited (redis
# closes its listeners in every background child). The epoll instance is
# shared with the parent: had the shim deleted the parent's registration from
# the child, the parent would stop accepting for good.
fork_storm() {
    local mode=$1 lfd i info e
    redis_up "$mode"
    [[ $(redis-cli -p "$PORT" set key value) == OK ]]
    clients HELD 5 --send 'PING\r\n' --reject -ERR --probe 'PING\r\n' --wait-ms 2000
    [[ $(get served HELD) == 5 ]]
    lfd=$(listen_fd "$PID" "$PORT")
    in_epoll "$PID" "$lfd"

    for ((i = 1; i <= 3; i++)); do
        [[ $(redis-cli -p "$PORT" bgsave) == 'Background saving started' ]]
        wait_until "redis_idle $PORT" 20
        [[ $(redis-cli -p "$PORT" bgrewriteaof) == 'Background append only file rewriting started' ]]
        wait_until "redis_idle $PORT" 20
    done
    info=$(redis-cli -p "$PORT" info persistence | tr -d '\r')
    grep -qx 'rdb_last_bgsave_status:ok' <<<"$info"
    grep -qx 'aof_last_bgrewrite_status:ok' <<<"$info"
    [[ $(grep -c 'Background saving terminated with success' "$T/redis.log") == 3 ]]
    [[ $(grep -c 'Background AOF rewrite terminated with success' "$T/redis.log") == 3 ]]

    # The listening socket is still in the parent's epoll set, new clients
    # are accepted and served, the held ones still answered.
    for e in $(epoll_fds "$PID"); do
        echo "epoll fd $e: $(grep '^tfd:' "/proc/$PID/fdinfo/$e" | tr -s ' ' | tr '\n' ';')"
    done
    in_epoll "$PID" "$lfd"
    clients AFTER 5 --send 'PING\r\n' --reject -ERR --wait-ms 2000
    [[ $(get served AFTER) == 5 ]]
    probe HELD | grep -q 'held=5 echoed=5 '
    [[ $(redis-cli -p "$PORT" get key) == value ]]
    note "redis fork storm ($mode): 3 BGSAVE + 3 BGREWRITEAOF done; listener fd $lfd still in the epoll set;" \
        "new clients served $(get served AFTER)/5, held clients answered 5/5"
}

@test "redis without the shim: BGSAVE/BGREWRITEAOF children leave the listener registered" {
    fork_storm plain
}

@test "redis with the shim: BGSAVE/BGREWRITEAOF children do not delete the parent's epoll registrations" {
    fork_storm shim
}

# ---- connection churn -----------------------------------------------------------

# redis-benchmark with a new connection per request: every request executed,
# and the descriptor table back to its size afterwards.
churn() {
    local mode=$1 base out err t0 secs rps stats t
    redis_up "$mode"
    base=$(fd_count "$PID")
    t0=$SECONDS
    redis-benchmark -p "$PORT" -k 0 -n 20000 -c 20 -t ping,set,get -q >"$T/bench.out" 2>"$T/bench.err"
    secs=$((SECONDS - t0))
    # -q redraws a progress line with \r; the final figure of each test ends
    # with "requests per second".
    out=$(tr '\r' '\n' <"$T/bench.out" | grep -E '^[A-Z_]+: [0-9.]+ requests per second' || true)
    err=$(grep -v '^WARNING: Keepalive disabled' "$T/bench.err" || true)
    echo "redis-benchmark ($secs s):"
    echo "$out"
    echo "stderr: $err"
    [[ -z $err ]]
    [[ $(grep -c . <<<"$out") == 4 ]]
    for t in PING_INLINE PING_MBULK SET GET; do
        grep -q "^$t: " <<<"$out"
    done
    no_line 'error|could not|refused|reset' <(tr '\r' '\n' <"$T/bench.out")

    # Every request reached redis and was executed; none was refused.
    stats=$(redis-cli -p "$PORT" info commandstats | tr -d '\r')
    echo "$stats"
    grep -q '^cmdstat_set:calls=20000,' <<<"$stats"
    grep -q '^cmdstat_get:calls=20000,' <<<"$stats"
    [[ $(sed -n 's/^cmdstat_ping:calls=\([0-9]*\),.*/\1/p' <<<"$stats") -ge 40000 ]]
    stats=$(redis-cli -p "$PORT" info stats | tr -d '\r')
    grep -qx 'rejected_connections:0' <<<"$stats"
    [[ $(sed -n 's/^total_connections_received://p' <<<"$stats") -ge 80000 ]]

    wait_until "(( \$(fd_count $PID) == $base ))" 10
    rps=$(sed -E 's/^([A-Z_]+): ([0-9.]+) requests per second.*/\1 \2/' <<<"$out" | tr '\n' ' ')
    note "redis churn ($mode): 80000 connections in ${secs} s, requests/s: $rps; descriptors back to $base"
}

@test "redis without the shim: redis-benchmark -k 0, every request served, descriptors back to baseline" {
    churn plain
}

@test "redis with the shim: redis-benchmark -k 0, every request served, descriptors back to baseline" {
    churn shim
}
