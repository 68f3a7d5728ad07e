#!/usr/bin/env bats
# The operator tools of scripts/fdguard (doctor, stat, ipc, squeeze, flood),
# each against real processes:
#   - tool_fds holds many descriptors and mappings: doctor WARNs and FAILs once
#     its limit is lowered; squeeze leaves exactly N numbers free;
#   - tool_stale leaves a stale epoll registration: doctor FAILs without the
#     shim, not with it;
#   - tool_ipc makes System V objects under the shim (which records their
#     creator) and is killed with SIGKILL: ipc lists and reaps them; a live
#     creator's or a live user's objects, another user's and those whose
#     creator is unknown are never touched;
#   - srv under the shim with FDGUARD_STATS: stat reads its counters while
#     flood makes them move after a squeeze; flood shows the shedding.
# Readiness is polled (ready files, /proc), never slept for. Every background
# process is stopped in teardown, every IPC object made here removed.

bats_require_minimum_version 1.5.0

load lib

NOBODY=65534

setup() {
	unset LD_PRELOAD "${!FDGUARD@}"
	T=$BATS_TEST_TMPDIR
	FDG=$FDG_ROOT/scripts/fdguard
	# The script finds the library and the flood client next to itself;
	# the suite uses the build under test (sanitizer builds included).
	export FDGUARD_LIB=$FDG_LIB FDGUARD_FLOOD=$FDG_FLOOD
	IPC_MADE=()
	PUB=
	local h
	for h in "$FDG_BIN"/{tool_fds,tool_ipc,tool_stale,srv} "$FDG_FLOOD"; do
		if [[ ! -x $h ]]; then
			echo "missing $h: run make and make helpers" >&2
			return 1
		fi
	done
}

teardown() {
	local pid
	for pid in "${FDG_PIDS[@]}"; do
		rm -f "/tmp/fdguard-squeeze-$EUID/$pid"
	done
	stop_all
	ipc_cleanup
	if [[ -n $PUB ]]; then
		rm -rf "$PUB"
	fi
	if [[ -d /tmp/fdguard-squeeze-$NOBODY ]]; then
		chown "$NOBODY" "/tmp/fdguard-squeeze-$NOBODY"
		chmod 0700 "/tmp/fdguard-squeeze-$NOBODY"
	fi
}

# ---- building blocks ---------------------------------------------------------

# "${AS_NOBODY[@]}" CMD...: CMD as uid/gid 65534, no supplementary groups.
AS_NOBODY=(setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups --)

# pub_dir: a directory in /tmp that a process running as nobody can write to.
pub_dir() {
	if [[ -z $PUB ]]; then
		PUB=$(mktemp -d /tmp/fdguard-tools.XXXXXX)
		chmod 0777 "$PUB"
	fi
}

# helper_up VAR READY CMD...: starts CMD (which writes READY when set up) and
# waits for READY (HELPER_TIMEOUT seconds, default 10); fails early if CMD
# dies first.
helper_up() {
	local var=$1 ready=$2
	shift 2
	rm -f "$ready"
	start_bg "$var" "$@"
	wait_until "[[ -s '$ready' ]] || ! fdg_alive ${!var}" "${HELPER_TIMEOUT:-10}"
	[[ -s $ready ]] || {
		echo "helper_up: $* exited before it was ready" >&2
		return 1
	}
}

# kill9 PID: SIGKILL, then reap (it is a child of this shell: once wait
# returns, the pid is gone).
kill9() {
	kill -KILL "$1"
	wait "$1" 2>/dev/null || true
}

# ipc_id READY KIND: the id of KIND in a tool_ipc ready file.
ipc_id() {
	awk -v k="$2" '$1 == k { print $2 }' "$1"
}

# ipc_line KIND ID: the object's line in /proc/sysvipc/KIND (empty if gone).
ipc_line() {
	awk -v id="$2" 'NR > 1 && $2 == id' "/proc/sysvipc/$1"
}

# ipc_exists KIND ID
ipc_exists() {
	[[ -n $(ipc_line "$1" "$2") ]]
}

# ipc_track READY CREATOR: remembers the objects in a tool_ipc ready file (and
# their ctime) so that teardown removes them, and their creator's registry
# entries.
ipc_track() {
	local kind id line
	local -a f
	while read -r kind id; do
		line=$(ipc_line "$kind" "$id")
		read -r -a f <<<"$line"
		case $kind in
		sem) IPC_MADE+=("$kind $id ${f[9]} $2") ;;
		*) IPC_MADE+=("$kind $id ${f[13]} $2") ;;
		esac
	done <"$1"
}

# ipc_cleanup: removes the objects made by this test that are still there
# (same id and ctime: not a newer object that got the same id), and the
# registry entries their creators left.
ipc_cleanup() {
	local entry kind id ctime creator line f uid
	local -a fields
	for entry in "${IPC_MADE[@]}"; do
		read -r kind id ctime creator <<<"$entry"
		line=$(ipc_line "$kind" "$id")
		if [[ -n $line ]]; then
			read -r -a fields <<<"$line"
			if [[ ($kind == sem && ${fields[9]} == "$ctime") || ($kind != sem && ${fields[13]} == "$ctime") ]]; then
				case $kind in
				shm) ipcrm -m "$id" 2>/dev/null || true ;;
				sem) ipcrm -s "$id" 2>/dev/null || true ;;
				msg) ipcrm -q "$id" 2>/dev/null || true ;;
				esac
			fi
		fi
		for uid in 0 "$NOBODY"; do
			f=/tmp/fdguard-ipc-$uid/$kind.$id
			if [[ -f $f ]] && grep -qx "pid $creator" "$f"; then
				rm -f "$f"
			fi
		done
	done
	IPC_MADE=()
}

# ipc_up VAR READY [shim] [TOOL_IPC ARGS...]: starts tool_ipc (preloaded with
# the shim when the third argument is "shim"), waits for its objects and
# tracks them for teardown.
ipc_up() {
	local var=$1 ready=$2
	shift 2
	local -a env=(env)
	if [[ ${1:-} == shim ]]; then
		env+=("LD_PRELOAD=$(fdg_preload)")
		shift
	fi
	helper_up "$var" "$ready" "${env[@]}" "$FDG_BIN/tool_ipc" --ready "$ready" "$@"
	ipc_track "$ready" "${!var}"
}

# srv_up plain|shim SHAPE [ENV...]: srv listening on a loopback port; sets SRV
# and ADDR. With shim: the library preloaded, ENV (VAR=VALUE) added.
srv_up() {
	local mode=$1 shape=$2
	shift 2
	local -a env=(env)
	if [[ $mode == shim ]]; then
		env+=("LD_PRELOAD=$(fdg_preload)" "$@")
	fi
	helper_up SRV "$T/srv.ready" "${env[@]}" "$FDG_BIN/srv" --shape "$shape" --port 0 \
		--ready "$T/srv.ready" 2>"$T/srv.err"
	ADDR=127.0.0.1:$(cat "$T/srv.ready")
}

# json EXPR: evaluates the Python expression EXPR on the JSON in $output (j).
json() {
	python3 -c 'import json, sys; j = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$output" "$1"
}

# check_status ID: the status of a doctor check in the JSON in $output.
check_status() {
	json "[c['status'] for c in j['checks'] if c['id'] == '$1'][0]"
}

# counter NAME: a counter from `fdguard stat --json` output in $output.
counter() {
	json "j['counters']['$1']"
}

# soft_nofile PID / hard_nofile PID
soft_nofile() {
	awk '/^Max open files/ { print $4 }' "/proc/$1/limits"
}
hard_nofile() {
	awk '/^Max open files/ { print $5 }' "/proc/$1/limits"
}

# max_fd PID: its highest open descriptor number.
max_fd() {
	local fd max=-1
	for fd in "/proc/$1/fd"/*; do
		fd=${fd##*/}
		((fd > max)) && max=$fd
	done
	echo "$max"
}

# children_of PID: pids whose parent is PID.
children_of() {
	local stat f
	for stat in /proc/[0-9]*/stat; do
		{ read -r f <"$stat"; } 2>/dev/null || continue
		f=${f##*) }
		read -r -a f <<<"$f"
		[[ ${f[1]} == "$1" ]] && echo "${stat//[!0-9]/}"
	done
	return 0
}

# ---- the command line ------------------------------------------------------

@test "top level: every subcommand is listed and has its help" {
	run -0 "$FDG" --help
	local sub top=$output
	for sub in run doctor stat ipc squeeze flood; do
		[[ $top == *"  $sub "* ]]
		run -0 "$FDG" "$sub" --help
		[[ $output == "Usage: fdguard $sub"* ]]
		run -0 "$FDG" help "$sub"
		[[ $output == "Usage: fdguard $sub"* ]]
	done
}

@test "usage errors exit 2 with the message and the usage" {
	local -a bad=(
		"doctor abc" "doctor 1 2" "doctor --bogus" "doctor 0"
		"stat 1 2" "stat --bogus"
		"ipc extra" "ipc --min-age" "ipc --min-age x" "ipc --key zz" "ipc --key 0x123456789"
		"ipc --pid 0" "ipc --bogus"
		"squeeze" "squeeze abc" "squeeze 1 --free" "squeeze 1 --free -1" "squeeze 1 --free x"
		"squeeze 1 2" "squeeze 1 --bogus"
		"flood" "flood 127.0.0.1:1 -n 10001" "flood 127.0.0.1:1 -n 0" "flood 127.0.0.1:1 --hold 3601"
		"flood 127.0.0.1:1 --wait-ms 0" "flood 127.0.0.1:99999" "flood nowhere" "flood a:1 b:2"
		"flood 127.0.0.1:1 --send \\q" "flood 127.0.0.1:1 -n"
	)
	local args
	for args in "${bad[@]}"; do
		# shellcheck disable=SC2086 # word splitting intended
		run -2 "$FDG" $args
		echo "$args: $output"
		[[ ${lines[0]} == "fdguard ${args%% *}: "* ]]
		[[ $output == *"Usage: fdguard ${args%% *}"* ]]
	done
}

@test "a pid that does not exist: exit 1, clear message" {
	local pid
	for ((pid = $(</proc/sys/kernel/pid_max) - 1; pid > 300; pid--)); do
		[[ -d /proc/$pid ]] || break
	done
	local sub
	for sub in doctor stat squeeze; do
		run -1 "$FDG" "$sub" "$pid"
		[[ $output == "fdguard $sub: no process with pid $pid" ]]
	done
}

# ---- doctor ----------------------------------------------------------------

@test "doctor: host summary; text and JSON" {
	# Other users' leftovers (or a busy CI host) may WARN: 0 or 1, never 2.
	run "$FDG" doctor
	((status == 0 || status == 1))
	[[ $output == *"open files (system)"* ]]
	[[ $output == *"System V shm segments"* ]]
	[[ $output == *"kernel.msgmni"* ]]
	run "$FDG" doctor --json
	((status == 0 || status == 1))
	[[ $(json "j['process']") == None ]]
	[[ $(check_status open_files) =~ ^(OK|WARN|FAIL)$ ]]
	[[ $(json "len(j['checks']) >= 8") == True ]]
}

@test "doctor: descriptors near the soft limit WARN, at it FAIL, with the prlimit fix" {
	helper_up P "$T/fds.ready" "$FDG_BIN/tool_fds" --ready "$T/fds.ready" --fds 200
	local n max
	n=$(fd_count "$P")
	max=$(max_fd "$P")
	# start_bg closed everything above 2: the table is contiguous.
	[[ $n == $((max + 1)) ]]
	set_nofile "$P" $((n * 10))
	# The host part may WARN on a shared machine: the process's checks count here.
	run "$FDG" doctor "$P" --json
	[[ $(check_status nofile_soft) == OK ]]

	set_nofile "$P" $((n * 100 / 90))
	run -1 "$FDG" doctor "$P"
	echo "$output"
	[[ $output =~ WARN\ +process\ +descriptors\ \(soft\ RLIMIT_NOFILE\)\ +$n\ +$((n * 100 / 90)) ]]
	[[ $output == *"fix: prlimit --pid $P --nofile="* ]]
	[[ $output == *"LimitNOFILE="* ]]

	set_nofile "$P" "$n"
	run -1 "$FDG" doctor "$P" --json
	[[ $(check_status nofile_soft) == FAIL ]]
	[[ $(json "[c for c in j['checks'] if c['id'] == 'nofile_soft'][0]['value']") == "$n" ]]
	[[ $(json "[c for c in j['checks'] if c['id'] == 'nofile_soft'][0]['fix']") == "prlimit --pid $P --nofile="* ]]
	[[ $(json j[\'status\']) == FAIL ]]
}

@test "doctor: mappings over 80% of vm.max_map_count WARN with the sysctl fix" {
	local max
	max=$(</proc/sys/vm/max_map_count)
	((max <= 300000)) || skip "vm.max_map_count=$max: too many mappings to make"
	# (TSan's mmap interceptor takes seconds for so many.)
	HELPER_TIMEOUT=120 helper_up P "$T/maps.ready" "$FDG_BIN/tool_fds" --ready "$T/maps.ready" \
		--maps $((max * 85 / 100))
	run -1 "$FDG" doctor "$P"
	echo "$output"
	[[ $output =~ WARN\ +process\ +memory\ mappings\ +[0-9]+\ +$max ]]
	[[ $output == *"fix: sysctl -w vm.max_map_count="* ]]
}

@test "doctor: a stale epoll registration is a FAIL without the shim, absent with it" {
	helper_up P "$T/stale.ready" "$FDG_BIN/tool_stale" --ready "$T/stale.ready"
	local epfd stale
	epfd=$(awk '$1 == "epfd" { print $2 }' "$T/stale.ready")
	stale=$(awk '$1 == "stale" { print $2 }' "$T/stale.ready")
	run -1 "$FDG" doctor "$P"
	echo "$output"
	[[ $output =~ FAIL\ +process\ +epoll\ fd\ $epfd:\ stale\ registrations\ +1\  ]]
	[[ $output == *"2 registered, 1 stale: fd $stale closed"* ]]
	[[ $output =~ fdguard\ +no ]]
	stop_bg "$P"

	# The number reused by another file: open, but stale all the same.
	helper_up P "$T/stale2.ready" "$FDG_BIN/tool_stale" --ready "$T/stale2.ready" --reuse
	run -1 "$FDG" doctor "$P" --json
	[[ $(check_status "epoll_$epfd") == FAIL ]]
	[[ $(json "[c for c in j['checks'] if c['id'] == 'epoll_$epfd'][0]['note']") == *"fd $stale now names another file"* ]]
	stop_bg "$P"

	helper_up P "$T/stale3.ready" env LD_PRELOAD="$(fdg_preload)" "$FDG_BIN/tool_stale" \
		--ready "$T/stale3.ready" --reuse
	run "$FDG" doctor "$P" --json
	[[ $(check_status "epoll_$epfd") == OK ]]
	[[ $(json "[c for c in j['checks'] if c['id'] == 'epoll_$epfd'][0]['note']") == "1 registered" ]]
	[[ $(json "[c for c in j['checks'] if c['id'] == 'fdguard'][0]['value']") == None ]]
	[[ $(json "[c for c in j['checks'] if c['id'] == 'fdguard'][0]['note']") == "loaded ($FDG_LIB)"* ]]
}

@test "doctor: everything OK exits 0 (a process of nobody, checked by nobody)" {
	pub_dir
	helper_up P "$PUB/ok.ready" "${AS_NOBODY[@]}" "$FDG_BIN/tool_fds" --ready "$PUB/ok.ready" --fds 10 --threads 2
	run "${AS_NOBODY[@]}" "$FDG" doctor "$P"
	echo "$output"
	((status == 0))
	[[ $output == "fdguard doctor: host "*", process $P (tool_fds, uid $NOBODY)"* ]]
	# 3, and a sanitizer runtime may add its own.
	local threads
	threads=$(awk '/^Threads:/ { print $2 }' "/proc/$P/status")
	((threads >= 3))
	[[ $output =~ OK\ +process\ +threads\ \(kernel.threads-max\)\ +$threads\  ]]
	[[ $output == *"OK: 0 FAIL, 0 WARN,"* ]]
}

@test "doctor, stat, squeeze: another user's process is refused with exit 1" {
	helper_up P "$T/fds.ready" "$FDG_BIN/tool_fds" --ready "$T/fds.ready"
	run -1 "${AS_NOBODY[@]}" "$FDG" doctor "$P"
	[[ $output == "fdguard doctor: cannot inspect process $P (tool_fds, uid 0): permission denied; run as uid 0 or as root" ]]
	run -1 "${AS_NOBODY[@]}" "$FDG" stat "$P"
	[[ $output == "fdguard stat: cannot read /proc/$P/environ (permission denied: run as its user or root)" ]]
	local before
	before=$(soft_nofile "$P")
	run -1 "${AS_NOBODY[@]}" "$FDG" squeeze "$P"
	[[ $output == "fdguard squeeze: cannot read the descriptors of pid $P (tool_fds): permission denied" ]]
	[[ $(soft_nofile "$P") == "$before" ]]
}

# ---- stat ------------------------------------------------------------------

@test "stat: live counters of a guarded server move while it runs (squeeze + flood)" {
	srv_up shim lt "FDGUARD_STATS=$T/stats.%p" 'FDGUARD_REJECT_MSG=BUSY\r\n'
	# The file is created when the shim initialises.
	wait_file "$T/stats.$SRV"
	run -0 "$FDG" stat "$SRV"
	echo "$output"
	[[ ${lines[0]} == "fdguard stat: $T/stats.$SRV" ]]
	[[ ${lines[1]} == "pid $SRV (srv), running" ]]
	[[ $output =~ accept_shed\ +0\ +connections\ taken\ through\ the\ spare\ and\ shed ]]
	run -0 "$FDG" stat "$SRV" --json
	[[ $(counter accept_shed) == 0 ]]
	[[ $(json "j['running']") == True ]]

	run -0 "$FDG" squeeze "$SRV"
	run -0 "$FDG" flood "$ADDR" -n 5
	[[ $output =~ rejected\ +5 ]]
	run -0 "$FDG" stat "$SRV" --json
	[[ $(counter accept_shed) == 5 ]]
	[[ $(counter accept_reject_sent) == 5 ]]
	# Still running, not stopped: reading the file does not touch it.
	fdg_alive "$SRV"
	[[ $(awk '{ print $3 }' "/proc/$SRV/stat") != T ]]

	run -0 "$FDG" squeeze "$SRV" --restore
	run -0 "$FDG" flood "$ADDR" -n 2
	run -0 "$FDG" stat "$T/stats.$SRV" --json
	[[ $(counter accept_shed) == 5 ]]

	# Without an argument: the processes that publish a stats file.
	run -0 "$FDG" stat
	[[ $output =~ $'\n'$SRV\ +srv\ +$T/stats.$SRV ]]

	# Once it is gone, the file holds its last values, with a warning.
	stop_bg "$SRV"
	run -1 "$FDG" stat "$T/stats.$SRV"
	[[ $output == *"pid $SRV (srv), not running"* ]]
	[[ $output == *"warning: pid $SRV (srv) in the header is not running: these are the last values it wrote"* ]]
	[[ $output =~ accept_shed\ +5 ]]
}

@test "stat: processes and files without counters are reported, exit 1" {
	helper_up P "$T/fds.ready" "$FDG_BIN/tool_fds" --ready "$T/fds.ready"
	run -1 "$FDG" stat "$P"
	[[ $output == "fdguard stat: process $P has no FDGUARD_STATS in its environment (start it with: fdguard run --stats PATH -- ...)" ]]
	run -1 "$FDG" stat "$T/nothing"
	[[ $output == "fdguard stat: $T/nothing: no such file" ]]
	echo hello >"$T/notstats"
	run -1 "$FDG" stat "$T/notstats"
	[[ $output == "fdguard stat: $T/notstats: not an fdguard stats file (no 'fdguard-stats 1' header)" ]]

	# A file whose header names a live process that does not publish it.
	srv_up shim lt "FDGUARD_STATS=$T/stats.%p"
	wait_file "$T/stats.$SRV"
	{
		printf 'fdguard-stats 1\npid %s\n' "$P"
		head -c 4096 "$T/stats.$SRV" | tr -d '\0' | tail -n +3
	} >"$T/forged"
	truncate -s 4096 "$T/forged"
	tail -c +4097 "$T/stats.$SRV" >>"$T/forged"
	run -1 "$FDG" stat "$T/forged"
	[[ $output == *"warning: pid $P is running but has no FDGUARD_STATS: not the process that wrote this file (pid reused?)"* ]]
}

# ---- squeeze ---------------------------------------------------------------

@test "squeeze: --free N leaves exactly N numbers free, holes included; --restore puts back soft:hard" {
	helper_up P "$T/fds.ready" "$FDG_BIN/tool_fds" --ready "$T/fds.ready" --fds 20 --hole 10
	# 0-2, 3-22 open, 10 closed: free numbers are 10, 23, 24, ...
	[[ $(max_fd "$P") == 22 ]]
	prlimit --pid "$P" --nofile=4000:5000
	run -0 "$FDG" squeeze "$P"
	echo "$output"
	[[ ${lines[0]} == "squeezed pid $P (tool_fds): soft RLIMIT_NOFILE 4000 -> 10 (hard 5000)" ]]
	[[ ${lines[1]} == "22 descriptors open, lowest free number 10: 0 free below the limit" ]]
	[[ ${lines[2]} == "restore with: fdguard squeeze $P --restore (back to 4000:5000)" ]]
	[[ $(soft_nofile "$P") == 10 ]]
	[[ -f /tmp/fdguard-squeeze-$EUID/$P ]]
	[[ $(stat -c %a "/tmp/fdguard-squeeze-$EUID") == 700 ]]

	# A second squeeze keeps the limits saved by the first.
	run -0 "$FDG" squeeze "$P" --free 1
	[[ $(soft_nofile "$P") == 23 ]]
	[[ ${lines[2]} == "restore with: fdguard squeeze $P --restore (back to 4000:5000)" ]]
	run -0 "$FDG" squeeze "$P" --free 2 --json
	[[ $(soft_nofile "$P") == 24 ]]
	[[ $(json "j['after']['soft']") == 24 ]]
	[[ $(json "j['saved']") == 4000:5000 ]]
	[[ $(hard_nofile "$P") == 5000 ]]

	run -0 "$FDG" squeeze "$P" --restore
	[[ $output == "restored pid $P (tool_fds): RLIMIT_NOFILE 24:5000 -> 4000:5000 (soft:hard)" ]]
	[[ $(soft_nofile "$P") == 4000 && $(hard_nofile "$P") == 5000 ]]
	[[ ! -e /tmp/fdguard-squeeze-$EUID/$P ]]

	run -1 "$FDG" squeeze "$P" --restore
	[[ $output == "fdguard squeeze: no saved limits for pid $P (tool_fds): it was not squeezed by uid $EUID, or was restored already" ]]

	run -1 "$FDG" squeeze "$P" --free 4990
	[[ $output == "fdguard squeeze: cannot leave 4990 descriptors free in pid $P: that needs a soft limit of 5012, above the hard limit 5000" ]]
	[[ $(soft_nofile "$P") == 4000 ]]
}

@test "squeeze --restore refuses a reused pid" {
	helper_up P "$T/fds.ready" "$FDG_BIN/tool_fds" --ready "$T/fds.ready"
	run -0 "$FDG" squeeze "$P"
	local state=/tmp/fdguard-squeeze-$EUID/$P squeezed
	squeezed=$(soft_nofile "$P")
	# The saved start time no longer matches: as if the pid now named another process.
	sed -i 's/^start .*/start 1/' "$state"
	run -1 "$FDG" squeeze "$P" --restore
	[[ $output == "fdguard squeeze: pid $P is not the squeezed process any more (it started at tick "*", the squeezed one at 1: pid reused); saved limits "*" discarded" ]]
	[[ $(soft_nofile "$P") == "$squeezed" ]]
	[[ ! -e $state ]]
}

@test "squeeze: a state directory that is not private is refused" {
	pub_dir
	helper_up P "$PUB/fds.ready" "${AS_NOBODY[@]}" "$FDG_BIN/tool_fds" --ready "$PUB/fds.ready"
	local dir=/tmp/fdguard-squeeze-$NOBODY before
	mkdir -p "$dir"
	chown "$NOBODY" "$dir"
	chmod 0755 "$dir"
	before=$(soft_nofile "$P")
	run -1 "${AS_NOBODY[@]}" "$FDG" squeeze "$P"
	[[ $output == "fdguard squeeze: $dir is not a private directory of uid $NOBODY (owner $NOBODY, mode 755): refusing to use it" ]]
	[[ $(soft_nofile "$P") == "$before" ]]
	chmod 0700 "$dir"
	run -0 "${AS_NOBODY[@]}" "$FDG" squeeze "$P"
	run -0 "${AS_NOBODY[@]}" "$FDG" squeeze "$P" --restore
	[[ $(soft_nofile "$P") == "$before" ]]
}

# ---- flood -----------------------------------------------------------------

@test "flood: a server with room serves everyone" {
	srv_up plain lt
	run -0 "$FDG" flood "$ADDR" -n 8
	echo "$output"
	[[ ${lines[0]} == "fdguard flood $ADDR: 8 connections, each answer awaited up to 1000 ms" ]]
	[[ $output =~ served\ +8\ +[0-9.]+\ ms\ +[0-9.]+\ ms\ +accepted\ and\ answered ]]
	[[ $output =~ hanging\ +0\ +-\ +- ]]
	run -0 "$FDG" flood "${ADDR##*:}" -n 3 --json
	[[ $(json "j['served']['count']") == 3 ]]
	[[ $(json "j['address']") == "$ADDR" ]]
}

@test "flood: a squeezed server without the shim leaves clients hanging (exit 1); with it they are shed" {
	srv_up plain et
	run -0 "$FDG" squeeze "$SRV"
	run -1 "$FDG" flood "$ADDR" -n 3 --wait-ms 300
	echo "$output"
	[[ $output =~ hanging\ +3\ +-\ +-\ +no\ answer\ within\ 300\ ms ]]
	run -0 "$FDG" squeeze "$SRV" --restore
	stop_bg "$SRV"

	srv_up shim et 'FDGUARD_REJECT_MSG=BUSY: try later\r\n'
	run -0 "$FDG" squeeze "$SRV"
	run -0 "$FDG" flood "$ADDR" -n 4
	echo "$output"
	[[ $output =~ rejected\ +4\ +[0-9.]+\ ms\ +[0-9.]+\ ms\ +answered\ with\ a\ rejection ]]
	[[ $output == *"rejection text: BUSY: try later"* ]]
	run -0 "$FDG" flood "$ADDR" -n 4 --json
	[[ $(json "j['rejected']['count']") == 4 ]]
	[[ $(json "j['rejected']['answer_ms_max'] < 1000") == True ]]
	[[ $(json "j['rejected_texts']") == "['BUSY: try later']" ]]
	run -0 "$FDG" squeeze "$SRV" --restore
	run -0 "$FDG" flood "$ADDR" -n 2
	[[ $output =~ served\ +2 ]]
}

@test "flood: a server squeezed before its first accept is relieved as well" {
	srv_up shim et 'FDGUARD_REJECT_MSG=BUSY\r\n' "FDGUARD_STATS=$T/stats.%p"
	run -0 "$FDG" squeeze "$SRV"
	run -0 "$FDG" flood "$ADDR" -n 4
	[[ $output =~ rejected\ +4 ]]
}

@test "flood --hold: report first, SIGUSR1 probes the held connections, SIGTERM ends it" {
	srv_up plain lt
	start_bg FL "$FDG" flood "$ADDR" -n 3 --hold 600 >"$T/fl.out" 2>"$T/fl.err"
	wait_until "grep -q '^served ' '$T/fl.out'" 10
	cat "$T/fl.out"
	grep -Eq '^served +3 ' "$T/fl.out"
	local client
	client=$(children_of "$FL" | head -n 1)
	[[ -n $client ]]
	kill -USR1 "$FL"
	wait_until "grep -q '^probe: ' '$T/fl.out'" 10
	grep -q '^probe: held=3 echoed=3 dead=0' "$T/fl.out"
	stop_bg "$FL"
	! fdg_alive "$client"
}

@test "flood: the client is found through FDGUARD_FLOOD, or reported missing" {
	srv_up plain lt
	FDGUARD_FLOOD=$T/none run -1 "$FDG" flood "$ADDR"
	[[ $output == "fdguard flood: FDGUARD_FLOOD=$T/none: not an executable file" ]]
	# Installed layout: bin/fdguard finds lib/fdguard/flood.
	mkdir -p "$T/inst/bin" "$T/inst/lib/fdguard"
	cp "$FDG" "$T/inst/bin/fdguard"
	cp -r "$FDG_ROOT/scripts/tools" "$T/inst/lib/fdguard/tools"
	cp "$FDG_FLOOD" "$T/inst/lib/fdguard/flood"
	unset FDGUARD_FLOOD FDGUARD_LIB
	run -0 "$T/inst/bin/fdguard" flood "$ADDR" -n 2
	[[ $output =~ served\ +2 ]]
	rm "$T/inst/lib/fdguard/flood"
	run -1 "$T/inst/bin/fdguard" flood "$ADDR" -n 2
	[[ $output == "fdguard flood: flood not found (run make; looked in $T/inst/build and $T/inst/lib/fdguard)" ]]
}

# ---- ipc -------------------------------------------------------------------

@test "ipc: the objects of a process killed with SIGKILL are listed, then reaped" {
	ipc_up P "$T/ipc.ready" shim
	local shm sem msg
	shm=$(ipc_id "$T/ipc.ready" shm) sem=$(ipc_id "$T/ipc.ready" sem) msg=$(ipc_id "$T/ipc.ready" msg)
	[[ -f /tmp/fdguard-ipc-$EUID/sem.$sem ]]
	kill9 "$P"

	run -1 "$FDG" ipc --pid "$P"
	echo "$output"
	[[ $output =~ shm\ +$shm\ +0x00000000\ +root\ +$P\ tool_ipc\ \(dead\)\ +[0-9]+s\ +orphan\ +4096\ bytes,\ nattch\ 0 ]]
	[[ $output =~ sem\ +$sem\ +0x00000000\ +root\ +$P\ tool_ipc\ \(dead\)\ +[0-9]+s\ +orphan\ +2\ semaphores ]]
	[[ $output =~ msg\ +$msg\ +0x00000000\ +root\ +$P\ tool_ipc\ \(dead\)\ +[0-9]+s\ +orphan\ +qnum\ 1 ]]
	[[ $output == *"uid 0: 3 orphaned (fdguard ipc --reap removes them)"* ]]
	run -1 "$FDG" ipc --pid "$P" --json
	[[ $(json "sorted(o['kind'] for o in j['objects'] if o['state'] == 'orphan')") == "['msg', 'sem', 'shm']" ]]

	# Not old enough: nothing listed, nothing removed.
	run -0 "$FDG" ipc --pid "$P" --min-age 3600 --reap --json
	[[ $(json "j['objects']") == "[]" ]]
	ipc_exists shm "$shm" && ipc_exists sem "$sem" && ipc_exists msg "$msg"

	run -0 "$FDG" ipc --pid "$P" --reap
	echo "$output"
	[[ $output == *"removed: shm $shm (key 0x00000000, creator $P tool_ipc dead)"* ]]
	[[ $output == *"removed: sem $sem (key 0x00000000, creator $P tool_ipc dead)"* ]]
	[[ $output == *"removed: msg $msg (key 0x00000000, creator $P tool_ipc dead)"* ]]
	! ipc_exists shm "$shm" && ! ipc_exists sem "$sem" && ! ipc_exists msg "$msg"
	[[ ! -e /tmp/fdguard-ipc-$EUID/sem.$sem ]]
	run -0 "$FDG" ipc --pid "$P"
}

@test "ipc: a live creator's objects are neither listed nor reaped" {
	ipc_up P "$T/ipc.ready" shim
	run -0 "$FDG" ipc --pid "$P"
	[[ $output == *"0 orphaned, 0 with creator unknown (never reaped), 3 in use (--all lists them)"* ]]
	run -0 "$FDG" ipc --pid "$P" --all
	echo "$output"
	[[ $output =~ shm\ +[0-9]+\ +0x00000000\ +root\ +$P\ tool_ipc\ \(alive\)\ +[0-9]+s\ +in-use ]]
	run -0 "$FDG" ipc --pid "$P" --reap
	local kind id
	while read -r kind id; do
		ipc_exists "$kind" "$id"
	done <"$T/ipc.ready"
	# A clean shutdown removes them itself.
	stop_bg "$P"
	while read -r kind id; do
		! ipc_exists "$kind" "$id"
	done <"$T/ipc.ready"
}

@test "ipc: objects with a live user (attached, last semop, last msgsnd) are kept" {
	ipc_up P "$T/ipc.ready" shim
	local shm sem msg
	shm=$(ipc_id "$T/ipc.ready" shm) sem=$(ipc_id "$T/ipc.ready" sem) msg=$(ipc_id "$T/ipc.ready" msg)
	helper_up U1 "$T/u1.ready" "$FDG_BIN/tool_ipc" --ready "$T/u1.ready" --use "shm:$shm"
	helper_up U2 "$T/u2.ready" "$FDG_BIN/tool_ipc" --ready "$T/u2.ready" --use "sem:$sem"
	helper_up U3 "$T/u3.ready" "$FDG_BIN/tool_ipc" --ready "$T/u3.ready" --use "msg:$msg"
	kill9 "$P"
	run -0 "$FDG" ipc --pid "$P" --all --reap
	echo "$output"
	[[ $output =~ shm\ +$shm\ .*\ in-use\ +4096\ bytes,\ nattch\ 1\;\ attached\ by\ 1,\ last\ user\ $U1\ \(tool_ipc\)\ alive ]]
	[[ $output =~ sem\ +$sem\ .*\ in-use\ +2\ semaphores\;\ last\ user\ $U2\ \(tool_ipc\)\ alive ]]
	[[ $output =~ msg\ +$msg\ .*\ in-use\ +qnum\ 2,\ 9\ bytes\;\ last\ user\ $U3\ \(tool_ipc\)\ alive ]]
	ipc_exists shm "$shm" && ipc_exists sem "$sem" && ipc_exists msg "$msg"

	# Once the users are gone too, they are orphans.
	stop_bg "$U1"
	stop_bg "$U2"
	stop_bg "$U3"
	run -0 "$FDG" ipc --pid "$P" --reap
	echo "$output"
	[[ $output == *"removed: shm $shm "* && $output == *"removed: sem $sem "* && $output == *"removed: msg $msg "* ]]
	! ipc_exists shm "$shm" && ! ipc_exists sem "$sem" && ! ipc_exists msg "$msg"
}

@test "ipc: semaphores and queues whose creator was not recorded are listed as unknown and kept" {
	local key=$((0x5f000000 + RANDOM * 8))
	ipc_up P "$T/ipc.ready" --key "$key"
	local shm sem msg
	shm=$(ipc_id "$T/ipc.ready" shm) sem=$(ipc_id "$T/ipc.ready" sem) msg=$(ipc_id "$T/ipc.ready" msg)
	kill9 "$P"
	run -1 "$FDG" ipc --key $((key + 1))
	echo "$output"
	# (A registry entry left by an earlier object with this id is for another key.)
	[[ $output =~ sem\ +$sem\ +$(printf '0x%08x' $((key + 1)))\ +root\ +unknown\ +[0-9]+s\ +unknown\ +2\ semaphores\;\ (creator\ not\ recorded|registry\ entry\ is\ for\ another) ]]
	[[ $output == *"0 orphaned, 1 with creator unknown (never reaped)"* ]]
	run -1 "$FDG" ipc --key "$(printf '0x%x' $((key + 2)))" --reap
	[[ $output != *removed:* ]]
	ipc_exists sem "$sem" && ipc_exists msg "$msg"
	# Shared memory carries its creator in the kernel (cpid): an orphan.
	run -0 "$FDG" ipc --key "$key" --reap
	[[ $output == *"removed: shm $shm (key $(printf '0x%08x' "$key"), creator $P ? dead)"* ]]
}

@test "ipc: another user's orphans are never touched; that user reaps them" {
	ipc_up P "$T/ipc.ready" shim --setuid "$NOBODY"
	local shm sem msg
	shm=$(ipc_id "$T/ipc.ready" shm) sem=$(ipc_id "$T/ipc.ready" sem) msg=$(ipc_id "$T/ipc.ready" msg)
	[[ $(ipc_line shm "$shm" | awk '{ print $8 }') == "$NOBODY" ]]
	kill9 "$P"
	# root: not even listed, and --reap without a filter leaves them alone.
	run "$FDG" ipc --reap --pid "$P" --json
	[[ $(json "j['objects']") == "[]" ]]
	[[ $(json "j['other_users'] >= 3") == True ]]
	ipc_exists shm "$shm" && ipc_exists sem "$sem" && ipc_exists msg "$msg"

	# And nobody cannot reap root's orphans.
	ipc_up R "$T/root.ready" shim
	local rshm
	rshm=$(ipc_id "$T/root.ready" shm)
	kill9 "$R"
	run -0 "${AS_NOBODY[@]}" "$FDG" ipc --pid "$R" --reap
	ipc_exists shm "$rshm"

	run -1 "${AS_NOBODY[@]}" "$FDG" ipc --pid "$P"
	[[ $output =~ sem\ +$sem\ +0x00000000\ +nobody\ +$P\ tool_ipc\ \(dead\)\ .*orphan ]]
	run -0 "${AS_NOBODY[@]}" "$FDG" ipc --pid "$P" --reap
	! ipc_exists shm "$shm" && ! ipc_exists sem "$sem" && ! ipc_exists msg "$msg"
	run -0 "$FDG" ipc --pid "$R" --reap
	! ipc_exists shm "$rshm"
}

@test "ipc: registry entries are trusted only in a private directory, as regular files of the caller" {
	local key=$((0x5e000000 + RANDOM * 8)) reg=$T/reg
	ipc_up P "$T/ipc.ready" --key "$key"
	local sem start
	sem=$(ipc_id "$T/ipc.ready" sem)
	kill9 "$P"
	export FDGUARD_IPC_REGISTRY=$reg
	mkdir -m 0700 "$reg"
	printf 'pid %s\nstart 1\nkey %s\nprog forged\n' "$P" $((key + 1)) >"$reg/sem.$sem"
	run -1 "$FDG" ipc --key $((key + 1))
	[[ $output =~ sem\ +$sem\ .*\ $P\ forged\ \(dead\)\ .*\ orphan ]]

	chmod 0750 "$reg"
	run -1 "$FDG" ipc --key $((key + 1))
	[[ $output == *"registry $reg is not a private directory of uid 0 (owner 0, mode 750): ignored"* ]]
	[[ $output =~ sem\ +$sem\ .*\ unknown\ .*\ unknown ]]
	chmod 0700 "$reg"

	chown "$NOBODY" "$reg/sem.$sem"
	run -1 "$FDG" ipc --key $((key + 1))
	[[ $output =~ sem\ +$sem\ .*\ unknown\ .*\ unknown ]]
	chown 0 "$reg/sem.$sem"

	mv "$reg/sem.$sem" "$reg/target"
	ln -s target "$reg/sem.$sem"
	run -1 "$FDG" ipc --key $((key + 1))
	[[ $output =~ sem\ +$sem\ .*\ unknown\ .*\ unknown ]]
	rm "$reg/sem.$sem"
	mv "$reg/target" "$reg/sem.$sem"

	# For another object (the key differs): not this one's creator.
	sed -i "s/^key .*/key $((key + 5))/" "$reg/sem.$sem"
	run -1 "$FDG" ipc --key $((key + 1))
	[[ $output == *"registry entry is for another object (key differs)"* ]]

	# A live pid with another start time: the creator's pid was reused.
	printf 'pid %s\nstart 1\nkey %s\nprog forged\n' "$$" $((key + 1)) >"$reg/sem.$sem"
	run -1 "$FDG" ipc --key $((key + 1))
	[[ $output =~ sem\ +$sem\ .*\ $$\ forged\ \(reused\)\ .*\ orphan ]]
	# The same pid with its real start time: the creator is alive.
	start=$(awk '{ sub(/.*\) /, ""); print $20 }' "/proc/$$/stat")
	printf 'pid %s\nstart %s\nkey %s\nprog forged\n' "$$" "$start" $((key + 1)) >"$reg/sem.$sem"
	run -0 "$FDG" ipc --key $((key + 1)) --all
	[[ $output =~ sem\ +$sem\ .*\ $$\ forged\ \(alive\)\ .*\ in-use\ .*creator\ alive ]]
}
