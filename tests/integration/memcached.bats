#!/usr/bin/env bats
# memcached (the distribution's package) at descriptor exhaustion, without and
# with the shim.
#
# memcached has its own EMFILE handling: on EMFILE from accept it stops
# accepting (accept_new_conns(false): the listener leaves the event set,
# listen(fd, 0)) and a 10 ms timer re-enables accepts only once one of its
# connections has closed. So it does not spin, but clients that arrive
# meanwhile wait in the backlog, and raising the limit alone does not bring
# it back: a connection has to close first.
#
# With the shim, memcached's accept returns EAGAIN after the backlog was shed.
# But memcached calls perror() before it reads errno, and glibc's perror()
# dup()s stderr while stderr has no orientation yet; at exhaustion that dup
# fails with EMFILE and overwrites errno, so memcached still sees EMFILE and
# pauses as above (strace: accept4 = -1 EAGAIN, dup(2) = -1 EMFILE,
# epoll_ctl(DEL listener), listen(fd, 0)). The clients in the backlog at that
# moment are shed with a message; later ones wait for memcached's own resume.
# Started with -vv, memcached writes to stderr at startup, perror() then uses
# stderr directly, errno survives, and memcached never pauses: every client
# is shed until the limit is raised, and then served at once.

load ../lib
load common

MC_MSG='ERROR Too many open connections\r\n' # memcached's own refusal text

setup() {
    it_setup
    need memcached
}

teardown() {
    it_teardown
}

mc_ready() {
    [[ $(say "$1" 'version\r\n') == VERSION* ]]
}

# mc_up MODE [MEMCACHED ARGS...]: PID, PORT.
mc_up() {
    local mode=$1
    shift
    # memcached refuses to run as root without -u.
    up memcached "$mode" mc_ready memcached -p @PORT@ -U 0 -l 127.0.0.1 -t 2 -c 1024 -u root "$@"
}

# exhaustion MODE [-vv]
exhaustion() {
    local mode=$1 verbose=${2:-} h1 ticks resumed
    local -a send=(--send 'version\r\n' --reject ERROR --wait-ms 300)
    if [[ $mode == shim ]]; then
        SRV_ENV+=("FDGUARD_REJECT_MSG=$MC_MSG")
    fi
    mc_up "$mode" ${verbose:+"$verbose"}
    hold h1
    [[ $(ask "$h1" 'version\r\n') == VERSION* ]]
    exhaust

    # One client first (alone in the backlog when memcached meets EMFILE),
    # then three more.
    clients NEW1 1 "${send[@]}"
    clients NEW2 3 "${send[@]}"
    ticks=$(cpu_over "$PID" 2)
    echo "memcached CPU over 2 s at exhaustion: $ticks ticks"

    if [[ $mode == plain ]]; then
        [[ $(get hanging NEW1) == 1 ]]
        [[ $(get hanging NEW2) == 3 ]]
        grep -q '^accept4(): Too many open files' "$T/memcached.log"
    else
        ((ticks <= CALM_TICKS))
        [[ $(get rejected NEW1) == 1 ]]
        grep -qx 'rejected-text: ERROR Too many open connections' "$T/NEW1.out"
        below "$(get answer_ms_max NEW1)" "$FAST_MS"
        if [[ -n $verbose ]]; then
            [[ $(get rejected NEW2) == 3 ]]
            below "$(get answer_ms_max NEW2)" "$FAST_MS"
        else
            # memcached paused accepting (perror's dup, above): the later
            # ones wait for its resume.
            [[ $(get hanging NEW2) == 3 ]]
        fi
    fi

    # The client connected before the exhaustion is still served.
    [[ $(ask "$h1" 'version\r\n') == VERSION* ]]

    # Room again. Without a pause memcached serves at once; after one it
    # waits until a connection closes.
    set_nofile "$PID" $((LIMIT + 64))
    clients AFTER0 1 --send 'version\r\n' --reject ERROR --wait-ms 500
    resumed=$(get served AFTER0)
    if [[ $mode == shim && -n $verbose ]]; then
        [[ $resumed == 1 ]]
    else
        [[ $(get hanging AFTER0) == 1 ]]
    fi
    stop_bg "$FILL"
    clients AFTER 3 --send 'version\r\n' --reject ERROR --wait-ms 3000
    [[ $(get served AFTER) == 3 ]]

    if [[ $mode == plain ]]; then
        note "memcached${verbose:+ $verbose} without the shim: ${ticks} ticks over 2 s at exhaustion;" \
            "new clients: $(get hanging NEW1)+$(get hanging NEW2)/4 hanging after 300 ms;" \
            "limit raised: served at once $resumed/1, served after a connection closed $(get served AFTER)/3"
    else
        note "memcached${verbose:+ $verbose} with the shim: ${ticks} ticks over 2 s at exhaustion;" \
            "new clients: $(($(get rejected NEW1) + $(get rejected NEW2)))/4 read memcached's refusal" \
            "(max $(get answer_ms_max NEW1) ms / $(get answer_ms_max NEW2) ms), $(get hanging NEW2)/3 waited for memcached's own resume;" \
            "limit raised: served at once $resumed/1, served after a connection closed $(get served AFTER)/3"
    fi
}

@test "memcached without the shim: EMFILE pauses accepting, new clients hang until a connection closes" {
    exhaustion plain
}

@test "memcached with the shim: backlog shed with memcached's refusal, no spin, held client served, recovers" {
    exhaustion shim
}

@test "memcached -vv with the shim: every new client shed while full, served again as soon as the limit is raised" {
    exhaustion shim -vv
}
