# fdguard stat: the live counters of a guarded process.
# shellcheck shell=bash source-path=SCRIPTDIR

# shellcheck source=common.bash
. "${BASH_SOURCE[0]%/*}/common.bash"

proc_env() {
	ENV_VARS=()
	{ mapfile -d '' -t ENV_VARS <"/proc/$1/environ"; } 2>/dev/null
}

# stats_path_of PID: sets STATS_PATH to the FDGUARD_STATS file of PID (from
# its environment, %p replaced by the pid); fails with STATS_WHY set: status 1
# when it has none, 2 when its environment is not readable.
STATS_WHY='' STATS_PATH=''
stats_path_of() {
	local entry path=''
	STATS_PATH=''
	if ! proc_env "$1"; then
		STATS_WHY="cannot read /proc/$1/environ (permission denied: run as its user or root)"
		return 2
	fi
	for entry in "${ENV_VARS[@]}"; do
		if [[ $entry == FDGUARD_STATS=* ]]; then
			path=${entry#FDGUARD_STATS=}
			break
		fi
	done
	if [[ $entry != FDGUARD_STATS=* ]]; then
		STATS_WHY="process $1 has no FDGUARD_STATS in its environment (start it with: fdguard run --stats PATH -- ...)"
		return 1
	fi
	if [[ -z $path ]]; then
		STATS_WHY="process $1 has an empty FDGUARD_STATS"
		return 1
	fi
	STATS_PATH=${path//%p/$1}
}

# stats_read FILE: parses a stats file into ST_PID, ST_PROG, ST_NAMES and
# ST_VALUES; fails with STATS_WHY set. The header is text up to 4096 bytes;
# the N counters (uint64, little-endian) follow at offset 4096.
ST_PID='' ST_PROG='' ST_NAMES=() ST_VALUES=()
stats_read() {
	local file=$1 size n i
	local -a lines
	ST_PID='' ST_PROG='' ST_NAMES=() ST_VALUES=()
	if [[ ! -e $file ]]; then
		STATS_WHY="$file: no such file"
		return 1
	fi
	if [[ ! -f $file || ! -r $file ]]; then
		STATS_WHY="$file: not a readable regular file"
		return 1
	fi
	mapfile -t lines < <(head -c 4096 -- "$file" | tr -d '\0')
	if [[ ${lines[0]:-} != 'fdguard-stats 1' || ${lines[1]:-} != 'pid '* ||
		${lines[2]:-} != 'prog '* || ${lines[3]:-} != 'counters '* ]]; then
		STATS_WHY="$file: not an fdguard stats file (no 'fdguard-stats 1' header)"
		return 1
	fi
	ST_PID=${lines[1]#pid }
	ST_PROG=${lines[2]#prog }
	n=${lines[3]#counters }
	if [[ ! $ST_PID =~ ^[0-9]+$ || ! $n =~ ^[0-9]+$ ]] || ((n > 500 || ${#lines[@]} < 4 + n)); then
		STATS_WHY="$file: malformed header"
		return 1
	fi
	ST_NAMES=("${lines[@]:4:n}")
	size=$(stat -c %s -- "$file") || size=0
	if ((size < 4096 + 8 * n)); then
		STATS_WHY="$file: truncated ($size bytes; the header announces $n counters)"
		return 1
	fi
	# -v: od would print "*" for repeated lines (all zeros, typically).
	read -r -d '' -a ST_VALUES < <(od -An -v -t u8 --endian=little -j 4096 -N $((8 * n)) -- "$file")
	if ((${#ST_VALUES[@]} != n)); then
		STATS_WHY="$file: cannot read the counters"
		return 1
	fi
	for ((i = 0; i < n; i++)); do
		[[ ${ST_NAMES[i]} =~ ^[a-z0-9_]+$ ]] || {
			STATS_WHY="$file: malformed counter name"
			return 1
		}
	done
}

# What each counter means (README, "Logs and counters").
counter_desc() {
	case $1 in
	accept_emfile) echo "accept calls that failed with EMFILE/ENFILE and were relieved" ;;
	accept_shed) echo "connections taken through the spare and shed" ;;
	accept_handed) echo "connections taken through the spare and kept (room had appeared)" ;;
	accept_headroom_shed) echo "connections shed to keep FDGUARD_HEADROOM free" ;;
	accept_reject_sent) echo "reject messages sent" ;;
	accept_nomem) echo "accept failures with ENOBUFS/ENOMEM" ;;
	accept_backoff) echo "backoff sleeps" ;;
	spare_armed) echo "spare descriptor opened" ;;
	spare_lent) echo "spare descriptor released for a connection or a load" ;;
	spare_lost) echo "spare descriptor closed or replaced by the application" ;;
	epoll_registrations) echo "EPOLL_CTL_ADDs recorded" ;;
	epoll_auto_del) echo "automatic EPOLL_CTL_DELs before a close or replacement" ;;
	epoll_dropped) echo "records dropped without a syscall (epoll fd closed, a parent's records)" ;;
	epoll_exclusive) echo "EPOLLEXCLUSIVE added to a listening socket's registration" ;;
	epoll_mod_emulated) echo "EPOLL_CTL_MOD of such a registration done as DEL + ADD" ;;
	epoll_untracked) echo "registrations in epoll instances beyond the table's 48" ;;
	dlopen_hits) echo "dlopen served from the cache" ;;
	dlopen_misses) echo "dlopen passed to the loader" ;;
	dlopen_loads) echo "objects the loader opened for the cache" ;;
	dlopen_unloads) echo "objects the cache really closed" ;;
	dlopen_evictions) echo "idle objects closed to stay within FDGUARD_DLOPEN_KEEP" ;;
	dlopen_reloads) echo "idle objects dropped because their file changed" ;;
	dlopen_retries) echo "transient loader failures retried" ;;
	dlopen_fd_lends) echo "spare descriptor lent to the loader" ;;
	ipc_recorded) echo "System V IPC objects whose creator was recorded" ;;
	log_suppressed) echo "log lines dropped by the rate limit" ;;
	*) echo "" ;;
	esac
}

usage_stat() {
	cat <<'EOF'
Usage: fdguard stat [PID | FILE] [--json]

Shows the live counters of a process running under fdguard with
FDGUARD_STATS set (fdguard run --stats PATH): the file is a text header
(pid, program, counter names) and the counters, which the process updates in
place. Reading it does not signal, stop or slow the process.

  PID     the file named by FDGUARD_STATS in the environment of PID
          (/proc/PID/environ; %p is replaced by PID)
  FILE    a stats file
  (none)  every running process whose environment names a stats file that
          it owns (header pid = its pid): pid, program, file

A warning (exit 1) when the pid in the header is not running (the values are
the last it wrote) or is running but does not publish to this file (pid
reused, or a path without %p shared by several processes).

Options:
  --json      one JSON object
  -h, --help  show this help

Exit status: 0 counters shown, 1 no stats file, unreadable, or a warning,
2 usage error.
EOF
}

cmd_stat() {
	local arg json='' target='' file pid='' i warn='' alive=no theirs
	tools_init
	while (($# > 0)); do
		arg=$1
		shift
		case $arg in
		-h | --help)
			usage_stat
			exit 0
			;;
		--json) json=1 ;;
		-*) die_usage "unknown option: $arg" ;;
		*)
			[[ -z $target ]] || die_usage "more than one PID or FILE given"
			target=$arg
			;;
		esac
	done

	if [[ -z $target ]]; then
		local -a pids=() progs=() files=()
		for arg in /proc/[0-9]*; do
			pid=${arg#/proc/}
			stats_path_of "$pid" || continue
			file=$STATS_PATH
			stats_read "$file" 2>/dev/null || continue
			[[ $ST_PID == "$pid" ]] || continue
			pids+=("$pid") progs+=("$ST_PROG") files+=("$file")
		done
		if [[ -n $json ]]; then
			printf '{"processes":['
			for ((i = 0; i < ${#pids[@]}; i++)); do
				((i > 0)) && printf ','
				printf '{"pid":%s,"prog":%s,"file":%s}' "${pids[i]}" "$(json_str "${progs[i]}")" "$(json_str "${files[i]}")"
			done
			printf ']}\n'
		elif ((${#pids[@]} == 0)); then
			echo "no running process with a readable fdguard stats file (FDGUARD_STATS)"
		else
			{
				row PID PROG FILE
				for ((i = 0; i < ${#pids[@]}; i++)); do
					row "${pids[i]}" "${progs[i]}" "${files[i]}"
				done
			} | print_table
		fi
		exit 0
	fi

	if [[ $target =~ ^[0-9]+$ ]]; then
		need_pid "$target"
		pid=$PID
		stats_path_of "$pid" || die "$STATS_WHY"
		file=$STATS_PATH
		if ! grep -q '/libfdguard\.so$' "/proc/$pid/maps" 2>/dev/null && [[ ! -e $file ]]; then
			die "process $pid does not have libfdguard.so loaded (FDGUARD_STATS=$file is not written)"
		fi
	else
		file=$target
	fi
	stats_read "$file" || die "$STATS_WHY"

	if proc_alive "$ST_PID"; then
		alive=yes
		if stats_path_of "$ST_PID"; then
			theirs=$STATS_PATH
			if ! [[ $theirs -ef $file ]]; then
				warn="pid $ST_PID is running but its FDGUARD_STATS is ${theirs}: not the process that wrote this file (pid reused?)"
			fi
		elif (($? == 1)); then
			warn="pid $ST_PID is running but has no FDGUARD_STATS: not the process that wrote this file (pid reused?)"
		fi
	else
		warn="pid $ST_PID ($ST_PROG) in the header is not running: these are the last values it wrote"
	fi
	if [[ -n $pid && $ST_PID != "$pid" && -z $warn ]]; then
		warn="the file names pid $ST_PID, not $pid (a FDGUARD_STATS without %p shared by several processes?)"
	fi

	if [[ -n $json ]]; then
		printf '{"file":%s,"pid":%s,"prog":%s,"running":%s,"warning":%s,"counters":{' "$(json_str "$file")" \
			"$ST_PID" "$(json_str "$ST_PROG")" "$([[ $alive == yes ]] && echo true || echo false)" \
			"$([[ -n $warn ]] && json_str "$warn" || echo null)"
		for ((i = 0; i < ${#ST_NAMES[@]}; i++)); do
			((i > 0)) && printf ','
			printf '"%s":%s' "${ST_NAMES[i]}" "${ST_VALUES[i]}"
		done
		printf '}}\n'
	else
		printf 'fdguard stat: %s\npid %s (%s), %s\n\n' "$file" "$ST_PID" "$ST_PROG" \
			"$([[ $alive == yes ]] && echo running || echo 'not running')"
		{
			row COUNTER VALUE MEANING
			for ((i = 0; i < ${#ST_NAMES[@]}; i++)); do
				row "${ST_NAMES[i]}" "${ST_VALUES[i]}" "$(counter_desc "${ST_NAMES[i]}")"
			done
		} | print_table
	fi
	if [[ -n $warn ]]; then
		printf 'fdguard stat: warning: %s\n' "$warn" >&2
		exit 1
	fi
	exit 0
}

