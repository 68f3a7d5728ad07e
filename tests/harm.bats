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

setup() {
    unset LD_PRELOAD "${!FDGUARD@}"
    T=$BATS_TEST_TMPDIR
    H=$FDG_BIN/harm
    PRE=$(fdg_preload)
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
    cleanup_paths
}

# secret FILE: a root file, mode 0600, with known content (FILE.orig keeps it).
secret() {
    printf 'secret of root\n' >"$1"
    chmod 0600 "$1"
    cp -p "$1" "$1.orig"
}

# warnings N: exactly N lines on stderr (the last run --separate-stderr), every
# one a shim line.
# shellcheck disable=SC2154 # stderr_lines: set by bats' run --separate-stderr
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
    need strace
    # strace shows the shim's lines reaching the pipe (EPIPE); a SIGPIPE
    # raised by them would be delivered through it, and kill the server.
    start_bg W "$H" broken-stderr strace -f -qq -o "$T/trace" -e trace=write,writev,pwritev2 \
        env LD_PRELOAD="$PRE" "$H" listen --serve --ready "$T/ready" >"$T/w.out"
    wait_file "$T/ready"
    local port pid
    read -r port pid <"$T/ready"
    FDG_PIDS+=("$pid")
    set_nofile "$pid" "$(fd_count "$pid")"
    # A thread blocked in accept holds a reserved number: the first client may
    # still be served; the next ones are shed (and logged: into the pipe).
    run -0 "$FDG_FLOOD" "127.0.0.1:$port" -n 4 --wait-ms 2000
    echo "$output"
    [[ $output =~ closed=([0-9]+) ]]
    ((BASH_REMATCH[1] >= 3))
    [[ $output == *" hanging=0 "* ]]
    fdg_alive "$pid"
    # The shed lines were written, into the pipe without a reader.
    grep -E '^[0-9]+ +(write|writev|pwritev2)\(2, .*fdguard\[harm:.* = -1 EPIPE' "$T/trace"
    # harm broken-stderr reports how its child ended once it has: SIGTERM,
    # not the SIGPIPE of a line written meanwhile.
    kill -TERM "$pid"
    wait_file "$T/w.out"
    [[ $(<"$T/w.out") == "signal 15" ]]
}

# ---- 2. never into the host's data ---------------------------------------------

# client_script PORT PID: client A is accepted on fd 2 (when the server closed
# its stderr) and held; the server is exhausted; clients B are sent until one
# is shed (or hangs). Prints what fd 2 is and what A read besides its greeting.
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
    b.settimeout(2)
    try:
        if b.recv(100) == b"":
            print("a client was shed")
            break
    except socket.timeout:
        print("a client hangs")
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
    stop_all
    # The harm is real: a plain server that logs its accept errors to fd 2
    # writes them into client A.
    rm -f "$T/ready"
    start_bg S "$H" listen --serve --close-stderr --log-errors --ready "$T/ready" 2>"$T/err"
    wait_file "$T/ready"
    read -r port pid <"$T/ready"
    run -0 client_script "$port" "$pid"
    echo "$output"
    [[ $output == *"server fd 2: socket"* ]]
    [[ $output == *"a client hangs"* ]]
    [[ $output == *"A read: b'harm: accept: Too many open files"* ]]
}

# ---- 3. never a block -----------------------------------------------------------

@test "3. FDGUARD_LOG naming a FIFO: a plain open blocks; the shim refuses it at once" {
    mkfifo "$T/fifo"
    run timeout 2 sh -c "echo line >'$T/fifo'"
    [[ $status == 124 ]]
    local t0=${EPOCHREALTIME//[!0-9]/} us
    listen_ok FDGUARD_LOG="$T/fifo" FDGUARD_HEADROOM=ten
    # At once: well below a second, where the watchdog would allow 10.
    us=$((${EPOCHREALTIME//[!0-9]/} - t0))
    echo "listen took $us us"
    ((us < 1000000))
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
    nobody_dir D
    secret "$T/victim"
    "${AS_NOBODY[@]}" ln -s "$T/victim" "$D/app.log"
    echo appended >>"$D/app.log"
    run -1 cmp -s "$T/victim" "$T/victim.orig"
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
    nobody_dir D
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
    nobody_dir D
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
    warnings 1
    said "FDGUARD_STATS: cannot use the file (a directory on the way is a symbolic link of another user); counters stay private: $D/app/new."
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
    nobody_dir D
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
    FDG_CLEAN+=("$S")
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
    # ...and the IPC registry records the creator of each object.
    run -0 "$S/suid" ipc-private
    local kind id n=0
    while read -r kind id; do
        REG_MADE+=("/tmp/fdguard-ipc-$EUID/$kind.$id")
        [[ -f /tmp/fdguard-ipc-$EUID/$kind.$id ]]
        rm "/tmp/fdguard-ipc-$EUID/$kind.$id"
        n=$((n + 1))
    done <<<"$output"
    ((n == 3))
    chmod u+s "$S/suid"

    # Under AT_SECURE the registry (the owner's: the euid) is not written.
    run -0 "${AS_NOBODY[@]}" "$S/suid" ipc-private
    n=0
    while read -r kind id; do
        REG_MADE+=("/tmp/fdguard-ipc-$EUID/$kind.$id")
        [[ ! -e /tmp/fdguard-ipc-$EUID/$kind.$id ]]
        n=$((n + 1))
    done <<<"$output"
    ((n == 3))
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
        entry=/tmp/fdguard-ipc-$EUID/$kind.$id
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

@test "nothing at load: an unengaged process makes no open, write, socket, mkdir, allocation or thread of the shim's" {
    need strace
    local calls='trace=openat,open,creat,write,socket,connect,mkdir,mkdirat,mmap,brk,clone,clone3,fork,vfork'
    strace -f -qq -e "$calls" -o "$T/shim" env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten \
        FDGUARD_STATS="$T/st.%p" FDGUARD_LOG="$T/log" /bin/true
    # env's own calls and the loader mapping the library aside:
    strace -f -qq -e "$calls" -o "$T/env" env /bin/true
    local only libfd rest
    only=$(diff <(sed 's/^[0-9]* *//; s/0x[0-9a-f]*/ADDR/g' "$T/env") \
        <(sed 's/^[0-9]* *//; s/0x[0-9a-f]*/ADDR/g' "$T/shim") | grep '^>' || true)
    echo "calls only with the shim:"
    echo "$only"
    # The loader opens the library, maps it from that descriptor and maps the
    # rest of its .bss as one zero-fill mapping inside that reservation
    # (MAP_FIXED). Anything else (an anonymous mmap or a brk of its own, a
    # thread) is the shim's.
    libfd=$(sed -nE 's/^> openat?\(.*libfdguard\.so", [^)]*\) = ([0-9]+)$/\1/p' <<<"$only")
    [[ $libfd =~ ^[0-9]+$ ]]
    rest=$(grep -vE -e '^> openat?\(.*libfdguard\.so", ' \
        -e "^> mmap\([^,]+, [0-9]+, [A-Z_|]+, MAP_PRIVATE(\|MAP_FIXED)?\|MAP_DENYWRITE, $libfd, " \
        -e '^> mmap\(ADDR, [0-9]+, PROT_READ\|PROT_WRITE, MAP_PRIVATE\|MAP_FIXED\|MAP_ANONYMOUS, -1, 0\) = ADDR$' \
        <<<"$only" || true)
    [[ -z $rest ]]
    (($(grep -c 'MAP_ANONYMOUS' <<<"$only") <= 1))
    [[ ! -e $T/log && -z $(compgen -G "$T/st.*") ]]
    # malloc before main (the shim's constructor runs there): none, as
    # without the shim. The traces cannot show it: a malloc in the
    # constructor makes the brk calls env's own first malloc makes later.
    run -0 "$H" heap
    local plain=$output
    run -0 env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten FDGUARD_STATS="$T/st.%p" FDGUARD_LOG="$T/log" "$H" heap
    [[ $output == "$plain" ]]
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
    local emfile="limit lowered to the spare: $T/plug/p2.so: cannot open shared object file: Too many open files"
    run -0 exec_clean "$H" dlabove "$T/plug"
    echo "without: $output"
    [[ $output == *"near the limit: spare=-1 lowest-free=56"* ]]
    [[ $output == *"$emfile"* ]]
    [[ $output == *"limit back: ok"* ]]
    run -0 --separate-stderr exec_clean env LD_PRELOAD="$PRE" FDGUARD_DLOPEN_RETRIES=0 \
        FDGUARD_STATS="$T/stats" "$H" dlabove "$T/plug"
    echo "with: $output"
    [[ $output == *"near the limit: spare=56 lowest-free=57"* ]]
    # As without the shim: the loader finds no descriptor.
    [[ $output == *"$emfile"* ]]
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
        [[ $output =~ hanging=([0-9]+) ]]
        ((BASH_REMATCH[1] >= 2))
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
    run -1 grep -qF "$T/st.$parent" "/proc/$child/maps"
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
    run -1 grep -qF "$T/st2.$parent" "/proc/$child/maps"
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
    need redis-server
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
    local uid reg
    # A uid whose registry does not exist yet (mkdir fails on one that does).
    for ((uid = 40000 + RANDOM % 20000; ; uid++)); do
        reg=/tmp/fdguard-ipc-$uid
        mkdir -m 0700 "$reg" 2>/dev/null && break
    done
    FDG_CLEAN+=("$reg")
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

# ---- errno: what the real call left ------------------------------------------------------

@test "IPC_CREAT of an existing key succeeds and leaves errno as it was (the shim's IPC_EXCL probe does not show)" {
    local O=$FDG_BIN/hostio
    run -0 "$O" ipc-errno
    local plain=$output
    [[ $(grep -c ', errno 1234$' <<<"$plain") == 3 ]]
    run -0 env LD_PRELOAD="$PRE" "$O" ipc-errno
    local kind shm sem msg
    read -r _ shm sem msg < <(grep '^ids ' <<<"$output")
    for kind in shm:$shm sem:$sem msg:$msg; do
        REG_MADE+=("/tmp/fdguard-ipc-$EUID/${kind%%:*}.${kind#*:}")
    done
    # The shim did record them (it created them with IPC_EXCL first).
    [[ -f /tmp/fdguard-ipc-$EUID/shm.$shm ]]
    [[ $(grep -v '^ids ' <<<"$output") == "$(grep -v '^ids ' <<<"$plain")" ]]
}

# ---- never a signal, never a wait: file size limits and terminals ------------------------

# stderr_to FILE CMD...: CMD with its stderr appended to FILE (run's own
# redirection would take it back).
stderr_to() {
    local file=$1
    shift
    "$@" 2>>"$file"
}

@test "RLIMIT_FSIZE: a plain write past it dies of SIGXFSZ; the shim's log lines and IPC entries do not kill the host" {
    local O=$FDG_BIN/hostio
    printf 'x%.0s' {1..200} >"$T/full"
    # Without the shim: a write at the limit raises SIGXFSZ (exit 128+25).
    run prlimit --fsize=100 sh -c "echo line >>'$T/full'"
    [[ $status == 153 ]]
    # A log file (FDGUARD_LOG) and a stderr file already at the limit.
    run -0 --separate-stderr prlimit --fsize=100 env LD_PRELOAD="$PRE" FDGUARD_LOG="$T/full" \
        FDGUARD_HEADROOM=ten "$O" listen
    run -0 stderr_to "$T/full" prlimit --fsize=100 env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten \
        "$O" listen
    [[ $(wc -c <"$T/full") == 200 ]]
    # Below the limit the same line is written.
    run -0 stderr_to "$T/full" prlimit --fsize=100000 env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten \
        "$O" listen
    grep -q 'FDGUARD_HEADROOM="ten" is invalid' "$T/full"
    # IPC registry entries: none can be written at a limit of 0; no partial entry stays.
    run -0 prlimit --fsize=0 "$H" ipc-private
    run -0 prlimit --fsize=0 env LD_PRELOAD="$PRE" "$H" ipc-private
    local kind id n=0
    while read -r kind id; do
        REG_MADE+=("/tmp/fdguard-ipc-$EUID/$kind.$id")
        [[ ! -e /tmp/fdguard-ipc-$EUID/$kind.$id ]]
        n=$((n + 1))
    done <<<"$output"
    ((n == 3))
}

@test "a terminal stopped by XOFF: a plain writer blocks; the shim drops its line and runs on" {
    local O=$FDG_BIN/hostio
    run -0 "$O" tty-stopped sh -c 'echo line >&2'
    [[ $output == blocked ]]
    run -0 "$O" tty-stopped "$O" listen
    [[ $output == "exit 0" ]]
    run -0 "$O" tty-stopped env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten "$O" listen
    [[ $output == "exit 0" ]]
    # A terminal that takes output gets the line.
    run -0 "$O" tty env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten "$O" listen
    [[ ${lines[0]} == "exit 0" ]]
    [[ ${lines[1]} == 'terminal showed: "fdguard[hostio:'*'FDGUARD_HEADROOM=\x22ten\x22 is invalid'* ]]
}

@test "a background job with TOSTOP: a plain writer is stopped (SIGTTOU); the shim writes nothing and the host runs on" {
    local O=$FDG_BIN/hostio
    run -0 "$O" tty-background sh -c 'echo line >&2'
    [[ $output == "stopped 22" ]]
    run -0 "$O" tty-background "$O" listen
    [[ $output == "exit 0" ]]
    run -0 "$O" tty-background env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten "$O" listen
    [[ $output == "exit 0" ]]
}

# ---- which fd 2 is stderr (README, Security) -----------------------------------------------

@test "fd 2 closed, then the daemon's data file or self-pipe lands there: the shim's kept line never goes into it" {
    local O=$FDG_BIN/hostio what
    for what in file pipe; do
        local -a arg=()
        [[ $what == pipe ]] && arg=(pipe)
        run -0 --separate-stderr "$O" aof "$T/plain.$what" "${arg[@]}"
        local plain_out=$output plain_err=$stderr
        # FDGUARD_HEADROOM=ten: a configuration line kept until the listen.
        run -0 --separate-stderr env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten "$O" aof \
            "$T/shim.$what" "${arg[@]}"
        echo "$what: $(cat "$T/shim.$what")"
        cmp "$T/plain.$what" "$T/shim.$what"
        [[ $output == "$plain_out" && $stderr == "$plain_err" ]]
    done
    [[ $(cat "$T/plain.file") == $'SET k v\nSET k2 v2' ]]
    [[ $(cat "$T/plain.pipe") == $'wake\nwake' ]]
}

@test "stderr from the start: a client's connection (inetd, Accept=yes) gets nothing; journald's stream and a socketpair get the line" {
    local O=$FDG_BIN/hostio kind
    for kind in unix tcp journal socketpair; do
        run -0 "$O" socket-stderr "$kind" "$O" listen
        [[ $output == $'exit 0\npeer read: ""' ]]
        run -0 "$O" socket-stderr "$kind" env LD_PRELOAD="$PRE" FDGUARD_HEADROOM=ten "$O" listen
        echo "$kind: $output"
        [[ ${lines[0]} == "exit 0" ]]
        case $kind in
        unix | tcp) [[ ${lines[1]} == 'peer read: ""' ]] ;;
        *) [[ ${lines[1]} == 'peer read: "fdguard[hostio:'*'FDGUARD_HEADROOM=\x22ten\x22 is invalid'*'\x0a"' ]] ;;
        esac
    done
}

# ---- the stats file: never a SIGBUS from a store into it -------------------------------------

# small_fs DIR SIZE CMD...: CMD in a mount namespace of its own where DIR is a
# tmpfs of SIZE with 4 KiB of it already used (nothing to unmount afterwards).
small_fs() {
    local dir=$1 size=$2
    shift 2
    unshare -m --propagation private sh -c \
        'mount -t tmpfs -o size="$2" tmpfs "$1" && head -c 4096 /dev/zero >"$1/fill" && shift 2 && exec "$@"' \
        _ "$dir" "$size" "$@"
}

@test "FDGUARD_STATS on a full file system: a plain store into a mapping of a sparse file dies of SIGBUS; the shim refuses the file" {
    if ! unshare -m --propagation private mount -t tmpfs tmpfs "$T" 2>/dev/null; then
        skip "cannot mount a tmpfs here"
    fi
    local O=$FDG_BIN/hostio
    mkdir "$T/fs"
    # What the shim did before: extend the file (sparse), map it, store.
    local naive='import mmap, sys
f = open(sys.argv[1] + "/st", "w+b")
f.truncate(8192)
m = mmap.mmap(f.fileno(), 8192)
m[0] = 1
m[4096] = 1
print("stored")'
    run small_fs "$T/fs" 8k /usr/bin/python3 -c "$naive" "$T/fs"
    [[ $status == 135 ]] # SIGBUS
    run -0 --separate-stderr small_fs "$T/fs" 8k env LD_PRELOAD="$PRE" FDGUARD_STATS="$T/fs/st.%p" \
        "$O" listen
    warnings 1
    said "FDGUARD_STATS: cannot use the file (no space left on device); counters stay private: $T/fs/st."
    # With room, the same process publishes its counters there.
    run -0 --separate-stderr small_fs "$T/fs" 64k env LD_PRELOAD="$PRE" FDGUARD_STATS="$T/fs/st.%p" \
        sh -c "'$O' listen && head -c 15 '$T/fs'/st.*"
    [[ $output == "fdguard-stats 2" && -z $stderr ]]
}

@test "FDGUARD_STATS at RLIMIT_FSIZE: the shim refuses the file instead of dying of SIGXFSZ" {
    local O=$FDG_BIN/hostio
    run prlimit --fsize=1000 sh -c "head -c 4312 /dev/zero >'$T/plain'"
    [[ $status == 153 ]]
    run -0 --separate-stderr prlimit --fsize=1000 env LD_PRELOAD="$PRE" FDGUARD_STATS="$T/st" "$O" listen
    warnings 1
    said "FDGUARD_STATS: cannot use the file (file size limit reached); counters stay private: $T/st"
    [[ ! -s $T/st ]]
}

@test "FDGUARD_STATS: a second process given the same path finds it locked and leaves it alone" {
    start_bg P env LD_PRELOAD="$PRE" FDGUARD_STATS="$T/shared" "$H" listen --ready "$T/ready" \
        --wait "$T/go"
    wait_file "$T/ready"
    local pid
    read -r _ pid <"$T/ready"
    grep -q "FLOCK .* $pid " /proc/locks
    cp "$T/shared" "$T/before"
    listen_ok FDGUARD_STATS="$T/shared"
    said "cannot use the file (in use by another live process; put %p in the path); counters stay private: $T/shared"
    cmp "$T/shared" "$T/before"
    touch "$T/go"
    wait_until "! fdg_alive $pid"
    listen_ok FDGUARD_STATS="$T/shared"
    [[ -z $stderr ]]
}

@test "errno: the shim initialising inside the first wrapper call (before its constructor, every numeric variable set) leaves that call's errno alone" {
    local hook=$T/earlyhook.so without with
    cc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$hook" "$FDG_ROOT/tests/hooks/earlyhook.c"
    local vars=(FDGUARD_HEADROOM=2 FDGUARD_DLOPEN_KEEP=8 FDGUARD_DLOPEN_RETRIES=2 FDGUARD_BACKOFF_MAX_MS=50)
    without=$(env LD_PRELOAD="$hook" "${vars[@]}" /bin/true)
    with=$(env LD_PRELOAD="$PRE $hook" "${vars[@]}" /bin/true)
    echo "without: $without"
    echo "with:    $with"
    [[ $without == *"fclose ret 0 errno 1234"* ]]
    [[ $with == "$without" ]]
}

@test "a wrapper called from .preinit_array (environ not set yet): FDGUARD=off is still obeyed, FDGUARD on still guards" {
    local P=$FDG_BUILD/tests/preinit without off on
    [[ -x $P ]] || fail "$P missing: make helpers builds it"
    without=$("$P")
    off=$(env LD_PRELOAD="$PRE" FDGUARD=off "$P")
    on=$(env LD_PRELOAD="$PRE" "$P")
    echo "without: $without"
    echo "off:     $off"
    echo "on:      $on"
    [[ $without =~ ^"preinit close errno 9, open descriptors after listen "([0-9]+)$ ]]
    local n=${BASH_REMATCH[1]}
    [[ $off == "$without" ]]
    # Guarded, listen arms the spare: one descriptor more (what a shim that
    # settled on defaults in preinit also showed under FDGUARD=off).
    [[ $on == "preinit close errno 9, open descriptors after listen $((n + 1))" ]]
}

@test "a number the spare had, closed by a raw syscall and reused by the app's own O_PATH directory: relief does not close it" {
    mkdir "$T/dir"
    run -0 "$H" rawclose "$T/dir"
    echo "without the shim: $output"
    [[ $output == *"accept EMFILE"*"dir open"* ]]
    run -0 env LD_PRELOAD="$PRE" "$H" rawclose "$T/dir"
    echo "with the shim: $output"
    [[ $output == *"accept EAGAIN"*"dir open"* ]]
}

@test "a vfork child's close_range(CLOSE_RANGE_UNSHARE) (without /proc: the table taken for shared) leaves the parent's thread deleting registrations at close" {
    need unshare umount
    [[ $EUID -eq 0 ]] || unavailable "needs root (a mount namespace without /proc)"
    local noproc=(unshare -m --propagation private sh -c 'umount -l /proc && exec env "$@"' sh)
    run -0 "${noproc[@]}" "$H" vfork-unshare
    echo "without the shim: $output"
    [[ $output == "events 1" ]] # the closed number's registration stays
    run -0 "${noproc[@]}" LD_PRELOAD="$PRE" "$H" vfork-unshare
    echo "with the shim: $output"
    [[ $output == "events 0" ]]
}
