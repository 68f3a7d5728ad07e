#!/usr/bin/env bats
# Do no harm inside the host (design.md, "Inside someone else's process").
#
# The shim runs in other people's processes, often as root. Each test puts it
# in a hostile or fragile spot and checks that the host neither dies, nor
# hangs, nor writes where it must not, nor shows the shim where it is not
# needed; and, next to it, the same spot without the shim (or a plain program
# doing what a naive shim would do) to show the harm is real. Helpers:
# tests/helpers/harm.c (a listener, an epoll user, a forking process, IPC
# creation, broken and full stderr pipes, loads near the descriptor limit).
# Files another user controls are made with setpriv as nobody, in a directory
# of nobody's.

bats_require_minimum_version 1.5.0

load lib

NOBODY=65534
AS_NOBODY=(setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups --)

setup() {
    unset LD_PRELOAD "${!FDGUARD@}"
    T=$BATS_TEST_TMPDIR
    H=$FDG_BIN/harm
    PRE=$(fdg_preload)
    CLEAN=()
    REG_MADE=()
    if [[ ! -x $H || ! -x $FDG_FLOOD || ! -f $FDG_LIB ]]; then
        echo "missing $H, $FDG_FLOOD or $FDG_LIB: run make and make helpers" >&2
        return 1
    fi
}

teardown() {
    stop_all
    local f
    for f in "${REG_MADE[@]}"; do
        rm -f "$f"
    done
    if ((${#CLEAN[@]})); then
        rm -rf "${CLEAN[@]}"
    fi
}

# attacker_dir: D, a directory of nobody's in /tmp (root can still use it).
attacker_dir() {
    D=$(mktemp -d /tmp/fdguard-harm.XXXXXX)
    CLEAN+=("$D")
    chown "$NOBODY:$NOBODY" "$D"
}

# refute CMD...: fails when CMD succeeds (bats does not fail on a bare `! CMD`).
refute() {
    if "$@"; then
        echo "unexpectedly true: $*"
        return 1
    fi
}

# secret FILE: a root file, mode 0600, with known content (FILE.orig keeps it).
secret() {
    printf 'secret of root\n' >"$1"
    chmod 0600 "$1"
    cp -p "$1" "$1.orig"
}

# warnings N: exactly N lines on stderr (the last run --separate-stderr), every
# one a shim line.
warnings() {
    printf 'stderr: %s\n' "${stderr_lines[@]}"
    [[ ${#stderr_lines[@]} == "$1" ]] || return 1
    local l
    for l in "${stderr_lines[@]}"; do
        [[ $l == 'fdguard['* ]] || return 1
    done
}

# said TEXT: one stderr line of the last run contains TEXT.
said() {
    [[ $(grep -cF -- "$1" <<<"$stderr") == 1 ]] || {
        echo "expected one stderr line with: $1"
        return 1
    }
}

# listen_ok VAR=VALUE...: harm listen (one guarded action) under the shim with
# these variables: exit 0, fast. stderr in $stderr.
listen_ok() {
    run -0 --separate-stderr timeout 10 env LD_PRELOAD="$PRE" "$@" "$H" listen
}

# stats_header FILE: the text header of a stats file, NULs removed.
stats_header() {
    head -c 4096 "$1" | tr -d '\0'
}

# stats_u64 FILE INDEX: the INDEX-th (0-based) uint64 after the header.
stats_u64() {
    od -An -v -t u8 --endian=little -j $((4096 + 8 * $2)) -N 8 "$1" | tr -d ' '
}

# stats_counter FILE NAME: a counter by name.
stats_counter() {
    local idx
    idx=$(stats_header "$1" | sed '1,/^counters /d' | grep -nxF -- "$2" | cut -d: -f1)
    [[ -n $idx ]] || return 1
    stats_u64 "$1" $((idx - 1))
}

# stats_ended FILE: the "ended" word after the N counters.
stats_ended() {
    local n
    n=$(stats_header "$1" | sed -n 's/^counters //p')
    stats_u64 "$1" "$n"
}

# plugins: $T/plug/p1.so ... p5.so, five distinct tiny libraries.
plugins() {
    local i
    mkdir -p "$T/plug"
    for i in 1 2 3 4 5; do
        echo "int value$i(void) { return $i; }" >"$T/plug/p$i.c"
        gcc -shared -fPIC -o "$T/plug/p$i.so" "$T/plug/p$i.c"
    done
}

# ---- 1. never a signal -------------------------------------------------------

@test "1. SIGPIPE: a reader-less stderr pipe kills a plain writer, not a process under the shim" {
    run -0 "$H" broken-stderr sh -c 'echo line >&2'
    [[ $output == "signal 13" ]]
    # The configuration warning is written when the listener engages.
    run -0 "$H" broken-stderr env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten "$H" listen
    [[ $output == "exit 0" ]]
    # A program that never needs the shim writes nothing at all.
    run -0 "$H" broken-stderr env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten /bin/true
    [[ $output == "exit 0" ]]
}

@test "1. SIGPIPE: a server under the shim sheds at EMFILE with a reader-less stderr pipe, and lives" {
    start_bg W "$H" broken-stderr env LD_PRELOAD="$PRE" "$H" listen --serve --ready "$T/ready" \
        >"$T/w.out"
    wait_file "$T/ready"
    local port pid
    read -r port pid <"$T/ready"
    FDG_PIDS+=("$pid")
    set_nofile "$pid" "$(fd_count "$pid")"
    # A thread blocked in accept holds a reserved number: the first client may
    # still be served; the next ones are shed (and logged: into the pipe).
    run -0 "$FDG_FLOOD" "127.0.0.1:$port" -n 4 --wait-ms 2000
    echo "$output"
    [[ $output =~ closed=([0-9]+) ]] && ((BASH_REMATCH[1] >= 3))
    [[ $output == *" hanging=0 "* ]]
    fdg_alive "$pid"
    [[ ! -s $T/w.out ]]
}

# ---- 2. never into the host's data ---------------------------------------------

# client_script PORT PID: client A is accepted on fd 2 (when the server closed
# its stderr) and held; the server is exhausted; clients B are sent until one
# is shed. Prints what fd 2 is and what A read besides its greeting.
client_script() {
    /usr/bin/python3 - "$@" <<'EOF'
import os, socket, subprocess, sys
port, pid = int(sys.argv[1]), sys.argv[2]
a = socket.create_connection(("127.0.0.1", port))
a.settimeout(5)
assert a.recv(6) == b"HELLO\n"
print("server fd 2:", os.readlink(f"/proc/{pid}/fd/2").split(":")[0])
n = len(os.listdir(f"/proc/{pid}/fd"))
subprocess.run(["prlimit", "--pid", pid, f"--nofile={n}:"], check=True)
for i in range(5):
    b = socket.create_connection(("127.0.0.1", port))
    b.settimeout(5)
    if b.recv(100) == b"":
        print("a client was shed")
        break
a.settimeout(0.5)
try:
    print("A read:", repr(a.recv(4096)))
except socket.timeout:
    print("A read: nothing")
EOF
}

@test "2. fd 2 reused by a client connection: the shed is logged, but never into that client" {
    # With its stderr, the server's shed is logged there...
    start_bg S env LD_PRELOAD="$PRE" "$H" listen --serve --ready "$T/ready" 2>"$T/err"
    wait_file "$T/ready"
    read -r port pid <"$T/ready"
    run -0 client_script "$port" "$pid"
    echo "$output"
    [[ $output == *"a client was shed"* ]]
    grep -q 'descriptor limit reached' "$T/err"
    stop_all
    # ...and when it closed stderr, fd 2 is client A's socket: A reads nothing.
    rm -f "$T/ready"
    start_bg S env LD_PRELOAD="$PRE" "$H" listen --serve --close-stderr --ready "$T/ready" 2>"$T/err"
    wait_file "$T/ready"
    read -r port pid <"$T/ready"
    run -0 client_script "$port" "$pid"
    echo "$output"
    [[ $output == *"server fd 2: socket"* ]]
    [[ $output == *"a client was shed"* ]]
    [[ $output == *"A read: nothing"* ]]
}

# ---- 3. never a block -----------------------------------------------------------

@test "3. FDGUARD_LOG naming a FIFO: a plain open blocks; the shim refuses it at once" {
    mkfifo "$T/fifo"
    run timeout 2 sh -c "echo line >'$T/fifo'"
    [[ $status == 124 ]]
    listen_ok FDGUARD_LOG="$T/fifo" FDGUARD_HEADROOM=ten
    warnings 2
    said "FDGUARD_LOG: cannot use the file (not a regular file); logging to stderr: $T/fifo"
    said 'FDGUARD_HEADROOM="ten" is invalid'
    # A program that never needs the shim does not even look.
    run -0 --separate-stderr timeout 10 env LD_PRELOAD="$PRE" FDGUARD_LOG="$T/fifo" \
        FDGUARD_HEADROOM=ten /bin/true
    [[ -z $stderr ]]
}

@test "3. a full stderr pipe: a plain writer blocks; the shim drops its line and runs on" {
    run -0 "$H" full-stderr sh -c 'echo line >&2'
    [[ $output == blocked ]]
    run -0 "$H" full-stderr env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten "$H" listen
    [[ $output == "exit 0" ]]
}

# ---- 4-6. files: never follow, never truncate, never trust other users --------

@test "4. FDGUARD_LOG: another user's link to a root file is not followed (a plain append follows it)" {
    attacker_dir
    secret "$T/victim"
    "${AS_NOBODY[@]}" ln -s "$T/victim" "$D/app.log"
    echo appended >>"$D/app.log"
    refute cmp -s "$T/victim" "$T/victim.orig"
    cp -p "$T/victim.orig" "$T/victim"

    listen_ok FDGUARD_LOG="$D/app.log" FDGUARD_HEADROOM=$'1\nfdguard[sshd:1]: forged line'
    cmp "$T/victim" "$T/victim.orig"
    warnings 2
    said "FDGUARD_LOG: cannot use the file (a symbolic link); logging to stderr: $D/app.log"
    said 'FDGUARD_HEADROOM="1\x0afdguard[sshd:1]: forged line" is invalid'

    # A dangling link: a plain append creates the file it names; the shim does not.
    "${AS_NOBODY[@]}" ln -s "$T/created" "$D/dangling.log"
    listen_ok FDGUARD_LOG="$D/dangling.log" FDGUARD_HEADROOM=ten
    [[ ! -e $T/created ]]
    said "cannot use the file (a symbolic link); logging to stderr: $D/dangling.log"
    echo appended >>"$D/dangling.log"
    [[ -e $T/created ]]
}

@test "4. FDGUARD_LOG: other users' files and hard links are refused; a root-owned directory link is followed" {
    attacker_dir
    "${AS_NOBODY[@]}" sh -c "echo theirs >'$D/other.log'"
    listen_ok FDGUARD_LOG="$D/other.log" FDGUARD_HEADROOM=ten
    [[ $(cat "$D/other.log") == theirs ]]
    said "cannot use the file (owned by another user); logging to stderr: $D/other.log"

    secret "$T/victim"
    ln "$T/victim" "$T/hard.log"
    listen_ok FDGUARD_LOG="$T/hard.log" FDGUARD_HEADROOM=ten
    cmp "$T/victim" "$T/victim.orig"
    said "cannot use the file (a file with other hard links); logging to stderr: $T/hard.log"

    # /var/run -> /run style: a link of root's on the way is fine.
    mkdir "$T/real"
    ln -s "$T/real" "$T/via"
    listen_ok FDGUARD_LOG="$T/via/app.log" FDGUARD_HEADROOM=ten
    [[ -z $stderr ]]
    [[ $(stat -c %a "$T/real/app.log") == 600 ]]
    grep -q 'FDGUARD_HEADROOM="ten" is invalid' "$T/real/app.log"
    # Appended, never truncated.
    listen_ok FDGUARD_LOG="$T/via/app.log" FDGUARD_HEADROOM=eleven
    [[ $(grep -c 'is invalid' "$T/real/app.log") == 2 ]]
}

@test "5. FDGUARD_STATS: a link in a parent directory planted by another user is not followed" {
    attacker_dir
    mkdir -m 0700 "$T/rootonly"
    secret "$T/rootonly/fdguard.stats"
    "${AS_NOBODY[@]}" ln -s "$T/rootonly" "$D/app"
    # Through the link, root reaches its own file:
    [[ $(cat "$D/app/fdguard.stats") == "secret of root" ]]
    listen_ok FDGUARD_STATS="$D/app/fdguard.stats"
    cmp "$T/rootonly/fdguard.stats" "$T/rootonly/fdguard.stats.orig"
    warnings 1
    said "FDGUARD_STATS: cannot use the file (a directory on the way is a symbolic link of another user); counters stay private: $D/app/fdguard.stats"
    listen_ok FDGUARD_STATS="$D/app/new.%p"
    [[ $(ls "$T/rootonly") == $'fdguard.stats\nfdguard.stats.orig' ]]
}

@test "5. FDGUARD_STATS: a file that is not a stats file is never truncated; a stats file of ours gets 0600" {
    printf 'data of the application\n' >"$T/data"
    cp "$T/data" "$T/data.orig"
    listen_ok FDGUARD_STATS="$T/data"
    cmp "$T/data" "$T/data.orig"
    said "cannot use the file (an existing file that is not an fdguard stats file); counters stay private: $T/data"

    # An earlier stats file of ours, left 0644: reused, made private.
    listen_ok FDGUARD_STATS="$T/stats"
    [[ -z $stderr ]]
    chmod 0644 "$T/stats"
    listen_ok FDGUARD_STATS="$T/stats"
    [[ -z $stderr ]]
    [[ $(stat -c %a "$T/stats") == 600 ]]
    stats_header "$T/stats" | grep -qx 'fdguard-stats 2'
}

@test "6. FIFOs, devices, other users' files: each refused in one line, nothing blocks, the host runs on" {
    attacker_dir
    mkfifo "$T/fifo"
    "${AS_NOBODY[@]}" sh -c "echo theirs >'$D/theirs'"
    local what
    for what in "$T/fifo" /dev/null "$D/theirs"; do
        listen_ok FDGUARD_STATS="$what"
        warnings 1
        said "counters stay private: $what"
        listen_ok FDGUARD_LOG="$what"
        warnings 1
        said "logging to stderr: $what"
    done
    [[ $(cat "$D/theirs") == theirs ]]
    [[ -p $T/fifo ]]
}

# ---- 7. secure execution ----------------------------------------------------------

@test "7. setuid root: paths from the caller's environment are ignored; the same binary without setuid uses them" {
    # A setuid-root program linked to the shim (LD_PRELOAD is not honoured for
    # setuid programs; DT_NEEDED with an absolute RPATH is), run by nobody.
    local S
    S=$(mktemp -d /tmp/fdguard-suid.XXXXXX)
    CLEAN+=("$S")
    chmod 0755 "$S"
    cp "$FDG_LIB" "$S/libfdguard.so"
    chmod 0755 "$S/libfdguard.so"
    gcc -O2 -D_GNU_SOURCE -o "$S/suid" "$FDG_ROOT/tests/helpers/harm.c" -L"$S" -l:libfdguard.so \
        -Wl,--no-as-needed -Wl,-rpath,"$S" -ldl
    readelf -d "$S/suid" | grep -q 'NEEDED.*libfdguard.so'
    local -a vars=(FDGUARD_STATS="$S/stats" FDGUARD_LOG="$S/rootlog"
        FDGUARD_HEADROOM=$'1\nroot: injected')
    secret "$S/victim"

    chmod u+s "$S/suid"
    run -0 --separate-stderr "${AS_NOBODY[@]}" env "${vars[@]}" "$S/suid" listen
    [[ ! -e $S/stats && ! -e $S/rootlog ]]
    warnings 3
    said "FDGUARD_LOG=\"$S/rootlog\" is ignored: this is a secure-execution process"
    said "FDGUARD_STATS=\"$S/stats\" is ignored: this is a secure-execution process"
    said 'FDGUARD_HEADROOM="1\x0aroot: injected" is invalid'
    # A root file named by the caller is not touched either.
    run -0 --separate-stderr "${AS_NOBODY[@]}" env FDGUARD_STATS="$S/victim" "$S/suid" listen
    cmp "$S/victim" "$S/victim.orig"

    # Without AT_SECURE (the setuid bit off, run by root) the same variables are used:
    chmod u-s "$S/suid"
    run -0 --separate-stderr env "${vars[@]}" "$S/suid" listen
    [[ -s $S/stats ]]
    grep -q 'root: injected' "$S/rootlog"
    chmod u+s "$S/suid"

    # Nor is the IPC registry written (root's, since the euid is root).
    run -0 "${AS_NOBODY[@]}" "$S/suid" ipc-private
    local kind id
    while read -r kind id; do
        [[ ! -e /tmp/fdguard-ipc-0/$kind.$id ]]
    done <<<"$output"
}

# ---- 8. escaping --------------------------------------------------------------------

@test "8. a newline in a value or in the program name never splits a line or forges a field" {
    local evil=$'evil\npid 1\nstart 1'
    mkdir "$T/bin"
    cp "$H" "$T/bin/$evil"
    run -0 --separate-stderr env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=$'1\nfdguard[x:1]: forged' \
        FDGUARD_STATS="$T/stats.%p" "$T/bin/$evil" listen --ready "$T/ready"
    warnings 1
    local pid
    read -r _ pid <"$T/ready"
    [[ ${stderr_lines[0]} == "fdguard[evil\\x0apid 1\\x0astart 1:$pid]: FDGUARD_HEADROOM=\"1\\x0afdguard[x:1]: forged\" is invalid"* ]]
    local -a hdr
    mapfile -t hdr < <(stats_header "$T/stats.$pid")
    [[ ${hdr[0]} == 'fdguard-stats 2' ]]
    [[ ${hdr[1]} == "pid $pid" ]]
    [[ ${hdr[2]} =~ ^start\ [0-9]+$ ]]
    [[ ${hdr[3]} == 'prog evil\x0apid 1\x0astart 1' ]]
    [[ ${hdr[4]} =~ ^counters\ [0-9]+$ ]]
    [[ $(printf '%s\n' "${hdr[@]}" | grep -c '^pid ') == 1 ]]

    # The IPC registry: four lines, one of each field.
    run -0 env LD_PRELOAD="$PRE" "$T/bin/$evil" ipc-private
    local kind id entry
    while read -r kind id; do
        entry=/tmp/fdguard-ipc-0/$kind.$id
        REG_MADE+=("$entry")
        [[ $(wc -l <"$entry") == 4 ]]
        [[ $(sed -n 4p "$entry") == 'prog evil\x0apid 1\x0astart 1' ]]
        [[ $(grep -c '^pid ' "$entry") == 1 && $(grep -c '^start ' "$entry") == 1 ]]
    done <<<"$output"
}

# ---- 9-10. quiet and invisible until needed -------------------------------------------

@test "9. a bad variable: programs that never need the shim say nothing; a listener says it once" {
    local script='env >/dev/null; basename /a/b; readlink /proc/self/exe >/dev/null; true'
    run -0 --separate-stderr sh -c "$script"
    local plain_out=$output plain_err=$stderr
    run -0 --separate-stderr env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten FDGUARD_ACCEPT=maybe sh -c "$script"
    [[ $output == "$plain_out" && $stderr == "$plain_err" ]]
    listen_ok FDGUARD_HEADROOM=ten FDGUARD_ACCEPT=maybe
    warnings 2
    said FDGUARD_HEADROOM
    said FDGUARD_ACCEPT
}

@test "10. FDGUARD_STATS: a shell pipeline leaves no files; a process that engages leaves one" {
    mkdir "$T/st"
    run -0 env LD_PRELOAD="$PRE" FDGUARD_STATS="$T/st/x.%p" \
        sh -c 'for i in 1 2 3 4 5; do ls >/dev/null; date >/dev/null; done'
    [[ -z $(ls "$T/st") ]]
    listen_ok FDGUARD_STATS="$T/st/x.%p"
    run -0 env LD_PRELOAD="$PRE" FDGUARD_STATS="$T/st/x.%p" "$H" epoll
    [[ $(ls "$T/st" | wc -l) == 2 ]]
}

@test "nothing at load: an unengaged process makes no open, write, socket or mkdir call of the shim's" {
    if ! command -v strace >/dev/null; then
        skip "strace is not installed"
    fi
    local calls='trace=openat,open,creat,write,socket,connect,mkdir,mkdirat,mmap'
    strace -f -qq -e "$calls" -o "$T/shim" env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten \
        FDGUARD_STATS="$T/st.%p" FDGUARD_LOG="$T/log" /bin/true
    # env's own calls and the loader mapping the library aside:
    strace -f -qq -e "$calls" -o "$T/env" env /bin/true
    local only
    only=$(diff <(sed 's/^[0-9]* *//; s/0x[0-9a-f]*/ADDR/g' "$T/env") \
        <(sed 's/^[0-9]* *//; s/0x[0-9a-f]*/ADDR/g' "$T/shim") | grep '^>' || true)
    echo "calls only with the shim:"
    echo "$only"
    # The loader opens and maps the library: nothing else.
    [[ -z $(grep -v -e 'libfdguard.so' -e '^> mmap(.*MAP_PRIVATE' <<<"$only") ]]
    [[ ! -e $T/log && -z $(compgen -G "$T/st.*") ]]
}

# ---- 11. the spare: only where it is needed -----------------------------------------

@test "11. a process that only loads libraries has the descriptors it has without the shim" {
    run -0 /usr/bin/python3 -c 'import _ctypes, _json, os; print(sorted(os.listdir("/proc/self/fd")))'
    local plain=$output
    run -0 env LD_PRELOAD="$PRE" /usr/bin/python3 -c \
        'import _ctypes, _json, os; print(sorted(os.listdir("/proc/self/fd")))'
    [[ $output == "$plain" ]]
    run -0 "$H" dlfds libz.so.1 libm.so.6
    plain=$output
    run -0 env LD_PRELOAD="$PRE" "$H" dlfds libz.so.1 libm.so.6
    [[ $output == "$plain" ]]
}

# CPython's test_subprocess.test_pass_fds, with a child that loads an extension
# module (Debian's python3 has the modules fd_status.py imports built in; a
# python whose stdlib is built shared fails the original the same way).
@test "11. test_pass_fds: a child that loads a library holds no descriptor that should be closed" {
    local script='
import os, subprocess, sys
child = """
import _json, os
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
print(",".join(str(fd) for fd in range(256) if is_open(fd)))
"""
open_fds = set()
for _ in range(5):
    r, w = os.pipe()
    os.set_inheritable(r, True)
    os.set_inheritable(w, True)
    open_fds.update((r, w))
bad = 0
for fd in sorted(open_fds):
    out = subprocess.run([sys.executable, "-c", child], stdout=subprocess.PIPE, close_fds=True,
                         pass_fds=(fd,), check=True).stdout
    remaining = set(map(int, out.split(b",")))
    if fd not in remaining or remaining & (open_fds - {fd}):
        print("passing", fd, "the child had", sorted(remaining))
        bad += 1
print("bad", bad)
'
    # exec_clean: the pipes take the lowest numbers, as in CPython's run.
    run -0 exec_clean /usr/bin/python3 -c "$script"
    [[ $output == "bad 0" ]]
    run -0 exec_clean env LD_PRELOAD="$PRE" /usr/bin/python3 -c "$script"
    echo "$output"
    [[ $output == "bad 0" ]]
}

@test "11. loads near the limit arm the spare, keep it below, and a load at a lowered limit succeeds" {
    plugins
    # exec_clean: the numbers below depend on starting with 0-2 only.
    run -0 exec_clean "$H" dlnear "$T/plug"
    echo "without: $output"
    [[ $output == *"at the limit: $T/plug/p4.so: cannot open shared object file: Too many open files"* ]]
    run -0 exec_clean env LD_PRELOAD="$PRE" "$H" dlnear "$T/plug"
    echo "with: $output"
    [[ $output == *"far from the limit: spare=-1 lowest-free=3"* ]]
    [[ $output == *"near the limit: spare=56 lowest-free=57"* ]]
    # The application closed fd 10: the next miss moves the spare there, so
    # that a limit lowered to what is in use leaves it usable.
    [[ $output == *"after a hole below: spare=10 lowest-free=56"* ]]
    [[ $output == *"at the limit: ok"* ]]
}

@test "11. a spare at a lowered soft limit frees nothing: it is dropped, and re-armed below the limit" {
    plugins
    run -0 --separate-stderr exec_clean env LD_PRELOAD="$PRE" FDGUARD_DLOPEN_RETRIES=0 \
        FDGUARD_STATS="$T/stats" "$H" dlabove "$T/plug"
    echo "$output"
    [[ $output == *"near the limit: spare=56 lowest-free=57"* ]]
    # As without the shim: the loader finds no descriptor.
    [[ $output == *"limit lowered to the spare: $T/plug/p2.so: cannot open shared object file: Too many open files"* ]]
    [[ $output == *"limit lowered to the spare: spare=-1"* ]]
    [[ $output == *"limit back: ok"* ]]
    [[ $output == *"limit back: spare=56 lowest-free=57"* ]]
    [[ $(stats_counter "$T/stats" spare_lost) == 1 ]]
    [[ $(stats_counter "$T/stats" spare_armed) == 2 ]]
}

# A documented limit (README, Limits), pinned: a server's spare is the lowest
# free number when it is armed (listen, after each shed). A descriptor the
# application frees below it afterwards, and a soft limit then lowered to that
# number (fdguard squeeze --free 0 counts holes first), leave the spare above
# the limit: closing it frees nothing the kernel hands out. Clients hang as
# without the shim; the accept loop backs off instead of spinning.
@test "limit: a hole below a server's spare and a limit lowered into it: no relief, but no spin" {
    local mode port pid low ticks pct
    for mode in plain shim; do
        rm -f "$T/ready"
        local -a env=(env)
        [[ $mode == shim ]] && env+=(LD_PRELOAD="$PRE")
        start_bg S "${env[@]}" "$H" listen --hole --serve --ready "$T/ready" 2>"$T/err"
        wait_file "$T/ready"
        read -r port pid <"$T/ready"
        low=$(/usr/bin/python3 -c "import os
fds = set(map(int, os.listdir('/proc/$pid/fd')))
print(min(set(range(len(fds) + 1)) - fds))")
        set_nofile "$pid" "$low"
        run -0 "$FDG_FLOOD" "127.0.0.1:$port" -n 3 --wait-ms 300
        echo "$mode: limit $low; $output"
        [[ $output =~ hanging=([0-9]+) ]] && ((BASH_REMATCH[1] >= 2))
        read -r ticks pct < <(spin_probe "$pid" 1)
        echo "$mode: $ticks ticks over 1 s, runnable in $pct% of samples"
        if [[ $mode == shim ]]; then
            ((ticks <= 20))
        else
            ((ticks > 50 || pct >= 90))
        fi
        stop_all
    done
}

# ---- issue 12, case 12: IPC_PRIVATE without IPC_CREAT --------------------------------

@test "IPC_PRIVATE without IPC_CREAT creates an object: its creator is recorded" {
    run -0 env LD_PRELOAD="$PRE" "$H" ipc-private
    local kind id entry n=0
    while read -r kind id; do
        entry=/tmp/fdguard-ipc-$EUID/$kind.$id
        REG_MADE+=("$entry")
        [[ -f $entry ]]
        [[ $(sed -n 1p "$entry") =~ ^pid\ [0-9]+$ && $(sed -n 3p "$entry") == "key 0" ]]
        n=$((n + 1))
    done <<<"$output"
    ((n == 3))
}

# ---- issue 13, the shim's side: per-process stats, and saying so ---------------------

@test "stats across fork: each process that engages publishes its own file, a child maps none of its parent's" {
    start_bg F env LD_PRELOAD="$PRE" FDGUARD_STATS="$T/st.%p" "$H" fork --parent-listen \
        --child-epoll --ready "$T/ready" --wait "$T/go"
    wait_file "$T/ready"
    local parent child
    read -r parent child <"$T/ready"
    FDG_PIDS+=("$child")
    [[ -f $T/st.$parent && -f $T/st.$child ]]
    grep -qF "$T/st.$child" "/proc/$child/maps"
    refute grep -qF "$T/st.$parent" "/proc/$child/maps"
    [[ $(stats_counter "$T/st.$child" epoll_registrations) == 1 ]]
    [[ $(stats_counter "$T/st.$parent" epoll_registrations) == 0 ]]
    [[ $(stats_ended "$T/st.$parent") == 0 && $(stats_ended "$T/st.$child") == 0 ]]
    touch "$T/go"
    wait_until "! fdg_alive $parent"
    # A normal exit marks each file ended (a CLOCK_REALTIME second).
    (($(stats_ended "$T/st.$parent") >= $(date +%s) - 60))
    (($(stats_ended "$T/st.$child") >= $(date +%s) - 60))

    # A child that never engages: no file, and its parent's is not mapped.
    rm -f "$T/ready" "$T/go"
    start_bg F env LD_PRELOAD="$PRE" FDGUARD_STATS="$T/st2.%p" "$H" fork --parent-listen \
        --ready "$T/ready" --wait "$T/go"
    wait_file "$T/ready"
    read -r parent child <"$T/ready"
    FDG_PIDS+=("$child")
    [[ -f $T/st2.$parent && ! -e $T/st2.$child ]]
    refute grep -qF "$T/st2.$parent" "/proc/$child/maps"
    # A killed process leaves ended at 0.
    kill -KILL "$parent" "$child"
    wait_until "! fdg_alive $parent"
    [[ $(stats_ended "$T/st2.$parent") == 0 ]]
}

@test "stats: a path without %p that a live process publishes is left to it, with a warning" {
    start_bg P env LD_PRELOAD="$PRE" FDGUARD_STATS="$T/shared" "$H" listen --ready "$T/ready" \
        --wait "$T/go"
    wait_file "$T/ready"
    local pid
    read -r _ pid <"$T/ready"
    stats_header "$T/shared" | grep -qx "pid $pid"
    listen_ok FDGUARD_STATS="$T/shared"
    warnings 1
    said "cannot use the file (in use by another live process; put %p in the path); counters stay private: $T/shared"
    stats_header "$T/shared" | grep -qx "pid $pid"
    touch "$T/go"
    wait_until "! fdg_alive $pid"
    # Once it has ended, the next process takes the file over.
    listen_ok FDGUARD_STATS="$T/shared"
    [[ -z $stderr ]]
    [[ $(stats_header "$T/shared" | sed -n 2p) != "pid $pid" ]]
}

@test "stats: redis --daemonize yes publishes under the daemon's pid" {
    if ! command -v redis-server >/dev/null; then
        skip "redis-server is not installed"
    fi
    run -0 exec_clean env LD_PRELOAD="$PRE" FDGUARD_STATS="$T/st.%p" redis-server --port 0 \
        --unixsocket "$T/redis.sock" --daemonize yes --pidfile "$T/redis.pid" --dir "$T" \
        --save '' --appendonly no --logfile "$T/redis.log"
    wait_file "$T/redis.pid"
    local pid
    pid=$(cat "$T/redis.pid")
    FDG_PIDS+=("$pid")
    wait_until "[[ -S '$T/redis.sock' ]]"
    [[ $(cd "$T" && echo st.*) == "st.$pid" ]]
    grep -qF "$T/st.$pid" "/proc/$pid/maps"
    stats_header "$T/st.$pid" | grep -qx "pid $pid"
}

@test "the IPC registry directory is not ours, or a %p expansion is too long: one warning" {
    local uid=$((40000 + RANDOM % 20000))
    local reg=/tmp/fdguard-ipc-$uid
    [[ ! -e $reg ]] || skip "$reg exists"
    mkdir -m 0700 "$reg"
    CLEAN+=("$reg")
    run -0 --separate-stderr setpriv --reuid="$uid" --regid="$uid" --clear-groups -- \
        env LD_PRELOAD="$PRE" "$H" ipc-private
    warnings 1
    said "IPC registry $reg: permission denied; creators are not recorded"

    local long
    long="$T/$(printf '%%p%.0s' {1..1500})"
    listen_ok FDGUARD_STATS="$long"
    warnings 1
    said "FDGUARD_STATS: the path is longer than 4095 bytes once %p is replaced by"
}
