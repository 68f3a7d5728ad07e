#!/usr/bin/env bats
# LD_PRELOAD is inherited by every child: shells, pipelines and the helpers a
# server forks and execs must work as without the shim, and none of the
# shim's descriptors (the spare, an O_PATH descriptor on /dev/null, and the
# log file) may cross an exec: both are O_CLOEXEC.

load ../lib
load common

setup() {
    it_setup
    need "$PY" curl
}

teardown() {
    it_teardown
}

# The pipeline prints an ls -l listing, then plain lines: normalise the
# listing, keep the rest.
fd_table_or_text() {
    awk '$(NF - 1) == "->" { print $(NF - 2), $NF; next } /^total / { next } { print }' |
        sed -E 's/\[[0-9]+\]/[]/; s#^([0-9]+) /proc/[0-9]+/#\1 /proc/PID/#'
}

# bare CMD...: runs CMD with descriptors 0-2 only (bats' own and whatever the
# caller inherited would blur the listings).
bare() { (exec_clean "$@"); }

PIPELINE='ls -l /proc/self/fd; ls /proc/self/fd | wc -l; echo hi | tr a-z A-Z | cat'

@test "a shell pipeline under the shim: same output, same descriptors as without" {
    local without with run
    without=$(bare sh -c "$PIPELINE" 2>&1 | fd_table_or_text)
    with=$(bare env LD_PRELOAD="$(fdg_preload)" sh -c "$PIPELINE" 2>&1 | fd_table_or_text)
    run=$(bare env FDGUARD_LIB="$FDG_LIB" "$FDG_ROOT/scripts/fdguard" run -- sh -c "$PIPELINE" 2>&1 |
        fd_table_or_text)
    echo "without: $without"
    echo "with:    $with"
    echo "run:     $run"
    [[ $with == "$without" ]]
    [[ $run == "$without" ]]
    [[ $without == *HI ]]
    note "sh pipeline: identical with and without the shim: $(tr '\n' ' ' <<<"$with")"
}

# A threaded HTTP server that runs a helper per request and returns its
# output: /spawn (subprocess's default: vfork + exec), /fork (a preexec_fn
# forces fork + exec), /pipeline (sh running a pipeline). close_fds=False: the
# child gets every descriptor of the server not marked close-on-exec.
spawner_up() {
    local name=$1 mode=$2
    cat >"$T/spawner.py" <<'EOF'
import http.server
import os
import subprocess
import sys

LS = ["ls", "-l", "/proc/self/fd"]
ROUTES = {
    "/spawn": (LS, {}),
    "/fork": (LS, {"preexec_fn": lambda: None}),
    "/pipeline": (["sh", "-c", "ls /proc/self/fd | wc -l; echo hi | tr a-z A-Z | cat"], {}),
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path not in ROUTES:
            self.send_error(404)
            return
        argv, extra = ROUTES[self.path]
        env = {k: v for k, v in os.environ.items() if k != os.environ.get("SPAWNER_DROP")}
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, close_fds=False, env=env, **extra).stdout
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
EOF
    up "$name" "$mode" spawner_ready "$PY" "$T/spawner.py" @PORT@
}

spawner_ready() {
    [[ $(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$1/spawn") == 200 ]]
}

# fetch PORT PATH: the helper's output for PATH (fails unless 200).
fetch() {
    curl -sf -m 10 "http://127.0.0.1:$1$2"
}

# fd_flags PID FD: the octal open flags of PID's descriptor FD.
fd_flags() {
    sed -n 's/^flags:[[:space:]]*//p' "/proc/$1/fdinfo/$2"
}

@test "a server that forks and execs helpers under the shim: they work, and no shim descriptor crosses exec" {
    local plain_port shim_port shim_pid path without with spare logfd f target flags
    spawner_up spawner-plain plain
    plain_port=$PORT
    # A log file too. The server's shim opens it for its first line (see
    # python.bats, FDGUARD_LOG): a bad value's warning makes that line come at
    # startup. The helpers run without that variable (SPAWNER_DROP), or their
    # own shim would write the same warning; they do inherit FDGUARD_LOG.
    SRV_ENV+=("FDGUARD_LOG=$T/fdguard.log" FDGUARD_EPOLLEXCLUSIVE=maybe
        SPAWNER_DROP=FDGUARD_EPOLLEXCLUSIVE)
    spawner_up spawner-shim shim
    shim_port=$PORT shim_pid=$PID

    # The shim really holds its descriptors in the server (the readiness
    # request went through accept): the spare (O_PATH on /dev/null) and the
    # log file, both close-on-exec.
    for f in /proc/"$shim_pid"/fd/*; do
        target=$(readlink "$f") || continue
        flags=$(fd_flags "$shim_pid" "${f##*/}")
        if [[ $target == /dev/null ]] && ((8#$flags & 8#10000000)); then
            spare=${f##*/}
            ((8#$flags & 8#2000000))
        elif [[ $target == "$T/fdguard.log" ]]; then
            logfd=${f##*/}
            ((8#$flags & 8#2000000))
        fi
    done
    echo "shim server descriptors: $(fd_list "$shim_pid"); spare $spare, log $logfd"
    [[ -n $spare && -n $logfd ]]
    grep -q 'FDGUARD_EPOLLEXCLUSIVE' "$T/fdguard.log"

    for path in /spawn /fork /pipeline; do
        without=$(fetch "$plain_port" "$path" | fd_table_or_text)
        with=$(fetch "$shim_port" "$path" | fd_table_or_text)
        echo "$path without: $(tr '\n' ' ' <<<"$without")"
        echo "$path with:    $(tr '\n' ' ' <<<"$with")"
        [[ -n $without && $with == "$without" ]]
        # Nothing but stdin may be /dev/null in the child.
        no_line /dev/null <(grep -Ev '^0 ' <<<"$with")
    done
    [[ $(fetch "$shim_port" /pipeline | tail -n 1) == HI ]]
    # The server is still fine after its vfork and fork children.
    fdg_alive "$shim_pid"
    spawner_ready "$shim_port"
    note "fork/vfork+exec children of a guarded server: identical descriptor tables with and without the shim" \
        "($(fetch "$shim_port" /spawn | fd_table_or_text | tr '\n' ' ')); server's spare fd $spare and log fd $logfd are O_CLOEXEC"
}
