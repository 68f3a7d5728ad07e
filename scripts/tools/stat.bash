# fdguard stat: the live counters of guarded processes, read from the stats
# files they map (FDGUARD_STATS), as text, JSON or Prometheus metrics.
# shellcheck shell=bash source-path=SCRIPTDIR

# shellcheck source=common.bash
. "${BASH_SOURCE[0]%/*}/common.bash"

usage_stat() {
	cat <<'EOF'
Usage: fdguard stat [PID | FILE | all] [--json | --prom]

Shows the live counters of a process running under fdguard with
FDGUARD_STATS set (fdguard run --stats PATH): the file is a text header
(format, pid, start time, program, counter names) and the counters, which
the process updates in place through a shared mapping. Reading it does not
signal, stop or slow the process.

  PID        the stats file PID maps (found in /proc/PID/maps, not in its
             environment, which daemons rewrite); as root it is opened
             through /proc/PID/map_files, which is exactly the mapped file
  FILE       a stats file (not a symbolic link)
  all, none  every process that maps a stats file of its own: pid,
             program, file (with --prom: their counters)

Each process publishes its own file (%p in the path is its pid; a fork
child that uses the shim gets its own). A warning (exit 1) when the
process in the header has ended (the values are the last it wrote: its exit
time is in the file when it exited normally), or its pid now belongs to
another process, or it does not map this file, or PID maps only another
process's file.

Files are opened without blocking and without following links
(O_NONBLOCK|O_NOFOLLOW, then checked to be the regular file that was looked
at, and the one the process maps), by the statsread program that make builds
next to the library.

Options:
  --json      one JSON object
  --prom      Prometheus text format (node_exporter's textfile collector):
              one counter family per counter, fdguard_NAME_total, with
              labels pid and prog
  -h, --help  show this help

Exit status: 0 counters shown, 1 no stats file, unreadable, or a warning,
2 usage error.
EOF
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

# --- which file a process maps -------------------------------------------------

# A process publishes its counters through a MAP_SHARED mapping of its stats
# file, so the mapping names the file. The environment does not: daemons
# rewrite it for their process title, and a fork child's %p is not its
# parent's. Candidates: shared mappings of a file at offset 0; the library
# line tells whether the shim is loaded at all.
STATS_MAPS_RE='^[0-9a-f]+-[0-9a-f]+ [-r][-w][-x]s 0+ [0-9a-f]+:[0-9a-f]+ [1-9][0-9]* +/|/libfdguard\.so$'

# The candidates found (one index each) and the library each process maps.
SM_PID=() SM_RANGE=() SM_DEV=() SM_INO=() SM_PATH=() SM_DELETED=()
SM_UNREADABLE=0
declare -A SM_SHIM=()

sm_reset() {
	SM_PID=() SM_RANGE=() SM_DEV=() SM_INO=() SM_PATH=() SM_DELETED=() SM_UNREADABLE=0 SM_SHIM=()
}

# sm_line PID LINE: records a line of /proc/PID/maps that matched: a shared
# mapping (a candidate), or the library (private mappings).
sm_line() {
	local range perms dev ino path deleted=''
	read -r range perms _ dev ino _ <<<"$2"
	path=/${2#* /}
	if [[ $perms != ???s ]]; then
		SM_SHIM[$1]=$path
		return
	fi
	# The kernel writes a newline in a path as \012 and marks a deleted file.
	path=${path//\\012/$'\n'}
	if [[ $path == *' (deleted)' ]]; then
		path=${path% (deleted)} deleted=1
	fi
	SM_PID+=("$1") SM_RANGE+=("$range") SM_DEV+=("$dev") SM_INO+=("$ino") SM_PATH+=("$path")
	SM_DELETED+=("$deleted")
}

# sm_of PID: the candidates of one process; fails when its maps cannot be read
# (another user's process, or one that is not dumpable).
sm_of() {
	local line out
	sm_reset
	# Opening is what the kernel checks (ptrace access), not the mode.
	{ : <"/proc/$1/maps"; } 2>/dev/null || return 1
	out=$(grep -E -- "$STATS_MAPS_RE" "/proc/$1/maps" 2>/dev/null)
	(($? <= 1)) || return 1
	while IFS= read -r line; do
		[[ -n $line ]] && sm_line "$1" "$line"
	done <<<"$out"
	return 0
}

# sm_all: the candidates of every process whose maps can be read;
# SM_UNREADABLE counts the others.
sm_all() {
	local f line pid
	local -a files=()
	sm_reset
	for f in /proc/[0-9]*/maps; do
		if { : <"$f"; } 2>/dev/null; then
			files+=("$f")
		elif [[ -e $f ]]; then
			SM_UNREADABLE=$((SM_UNREADABLE + 1))
		fi
	done
	((${#files[@]} > 0)) || return 0
	while IFS= read -r line; do
		pid=${line#/proc/}
		pid=${pid%%/*}
		sm_line "$pid" "${line#*/maps:}"
	done < <(grep -H -E -- "$STATS_MAPS_RE" "${files[@]}" 2>/dev/null)
}

# dev_norm MAJ:MIN (hexadecimal, as maps and statsread print it): decimal
# major:minor, so that 08:01 and 8:1 compare equal.
dev_norm() {
	printf '%d:%d' "$((16#${1%%:*}))" "$((16#${1#*:}))"
}

# --- reading a stats file --------------------------------------------------------

SR_BIN=''
ST_FORMAT='' ST_PID='' ST_START='' ST_PROG='' ST_ENDED='' ST_DEV='' ST_INO='' ST_VIA=''
ST_NAMES=() ST_VALUES=() ST_STATE='' STATS_WHY=''

# stats_read PATH [PID RANGE DEV INO]: reads a stats file (with the mapping
# of PID it must be: /proc/PID/map_files/RANGE, device and inode) into ST_*.
# Fails with STATS_WHY set; status 5: not a stats file at all.
#
# Format 2 (format 1, written by earlier shims, has no start line, raw
# program names and no "ended" word):
#   fdguard-stats 2 / pid N / start TICKS / prog ESCAPED / counters N /
#   N counter names, one per line; NUL padding to 4096; N little-endian
#   uint64 counters, then "ended": 0 while the process runs, the
#   CLOCK_REALTIME second of its normal exit afterwards.
stats_read() {
	local path=$1 out rc n i=1 p
	local -a args=() lines words hdr
	local -A seen=()
	ST_FORMAT='' ST_PID='' ST_START='' ST_PROG='' ST_ENDED='' ST_DEV='' ST_INO='' ST_VIA=''
	ST_NAMES=() ST_VALUES=() ST_STATE=''
	# (Not an option to statsread; its messages name the path as given.)
	[[ $path != -* ]] || path=./$path
	if (($# > 1)); then
		args=(--map "/proc/$2/map_files/$3" --dev "$4" --ino "$5")
	fi
	out=$("${SR_BIN:?}" "${args[@]}" "$path" 2>&1)
	rc=$?
	if ((rc != 0)); then
		out=${out/#"$path: "/"$1: "}
		STATS_WHY=${out:-$1: cannot be read (statsread exit $rc)}
		return "$rc"
	fi
	mapfile -t lines <<<"$out"
	read -r _ ST_DEV ST_INO _ _ ST_VIA <<<"${lines[0]}"
	read -r -a words <<<"${lines[1]#words}"
	hdr=("${lines[@]:2}")
	p=$1
	case ${hdr[0]:-} in
	'fdguard-stats 1') ST_FORMAT=1 ;;
	'fdguard-stats 2') ST_FORMAT=2 ;;
	*)
		STATS_WHY="$p: unknown stats file format '${hdr[0]:-}'"
		return 1
		;;
	esac
	STATS_WHY="$p: malformed header"
	[[ ${hdr[i]:-} =~ ^pid\ ([1-9][0-9]{0,9})$ ]] || return 1
	ST_PID=${BASH_REMATCH[1]}
	i=$((i + 1))
	if [[ $ST_FORMAT == 2 ]]; then
		[[ ${hdr[i]:-} =~ ^start\ (0|[1-9][0-9]{0,19})$ ]] || return 1
		ST_START=${BASH_REMATCH[1]}
		i=$((i + 1))
		if [[ ${hdr[i]:-} != 'prog '* ]] || ! is_escaped "${hdr[i]#prog }"; then
			return 1
		fi
		unesc ST_PROG "${hdr[i]#prog }"
	else
		[[ ${hdr[i]:-} == 'prog '* ]] || return 1
		ST_PROG=${hdr[i]#prog }
	fi
	i=$((i + 1))
	[[ ${hdr[i]:-} =~ ^counters\ (0|[1-9][0-9]{0,2})$ ]] || return 1
	n=${BASH_REMATCH[1]}
	i=$((i + 1))
	((n <= 500 && ${#hdr[@]} >= i + n)) || return 1
	ST_NAMES=("${hdr[@]:i:n}")
	for p in "${ST_NAMES[@]}"; do
		if [[ ! $p =~ ^[a-z][a-z0-9_]{0,63}$ || -n ${seen[$p]:-} ]]; then
			STATS_WHY="$1: malformed counter name (or a name twice)"
			return 1
		fi
		seen[$p]=1
	done
	if ((${#words[@]} < n + (ST_FORMAT == 2))); then
		STATS_WHY="$1: truncated ($((4096 + 8 * ${#words[@]})) bytes or less; the header announces $n counters)"
		return 1
	fi
	ST_VALUES=("${words[@]:0:n}")
	[[ $ST_FORMAT == 2 ]] && ST_ENDED=${words[n]}
	STATS_WHY=''
	return 0
}

# stats_state: ST_STATE of the process in the header: running; exited (its
# normal exit is recorded); gone (no such process, or a zombie: killed, or a
# format 1 file); reused (the pid belongs to a process with another start
# time).
stats_state() {
	local -a PF
	if [[ $ST_FORMAT == 2 && $ST_ENDED != 0 ]]; then
		ST_STATE=exited
	elif ! proc_fields "$ST_PID" || [[ ${PF[0]} == [ZX] ]]; then
		ST_STATE=gone
	elif [[ $ST_FORMAT == 2 && ${PF[19]} != "$ST_START" ]]; then
		ST_STATE=reused
	else
		ST_STATE=running
	fi
}

# state_text: ST_STATE in words.
state_text() {
	case $ST_STATE in
	running) echo running ;;
	exited) printf 'exited at %(%Y-%m-%d %H:%M:%S)T\n' "$ST_ENDED" ;;
	reused) echo "not running (pid $ST_PID now belongs to a later process)" ;;
	*) echo "not running" ;;
	esac
}

ST_PATH='' ST_DELETED=''

# stats_find PID: reads the stats file PID maps into ST_* (ST_PATH: its
# path). Status 0: its own file; 3: only another process's file (a fork child
# that has not published its own, or a format 1 shim, which shares the
# parent's file); 1: none; 2: it cannot be inspected. STATS_WHY says why.
stats_find() {
	local pid=$1 i start='' other=-1 why='' rc name
	local -a PF
	name=$(proc_name "$pid")
	ST_PATH='' ST_DELETED=''
	if ! sm_of "$pid"; then
		STATS_WHY="cannot read /proc/$pid/maps of process $pid ($name): permission denied; run as its user or root"
		return 2
	fi
	proc_fields "$pid" && start=${PF[19]}
	for ((i = 0; i < ${#SM_PID[@]}; i++)); do
		stats_read "${SM_PATH[i]}" "$pid" "${SM_RANGE[i]}" "${SM_DEV[i]}" "${SM_INO[i]}"
		rc=$?
		if ((rc == 0)) && [[ $ST_PID == "$pid" && ($ST_FORMAT == 1 || $ST_START == "$start") ]]; then
			ST_PATH=${SM_PATH[i]} ST_DELETED=${SM_DELETED[i]}
			return 0
		elif ((rc == 0)); then
			((other >= 0)) || other=$i
		elif ((rc != 5)) && [[ -z $why ]]; then
			why=$STATS_WHY
		fi
	done
	if ((other >= 0)); then
		i=$other
		stats_read "${SM_PATH[i]}" "$pid" "${SM_RANGE[i]}" "${SM_DEV[i]}" "${SM_INO[i]}" || return 1
		ST_PATH=${SM_PATH[i]} ST_DELETED=${SM_DELETED[i]}
		STATS_WHY="process $pid has no stats file of its own; it maps the one of pid $ST_PID ($ST_PROG): a fork child that has not used the shim yet, or a shim that shares the parent's file (format $ST_FORMAT)"
		return 3
	fi
	if [[ -n $why ]]; then
		STATS_WHY="process $pid ($name) maps a stats file that cannot be read: $why"
		return 2
	fi
	if [[ -z ${SM_SHIM[$pid]:-} ]]; then
		STATS_WHY="process $pid ($name) does not have libfdguard.so loaded"
	else
		STATS_WHY="process $pid ($name) maps no fdguard stats file (start it with: fdguard run --stats PATH -- ...)"
	fi
	return 1
}

# maps_file PID DEV INO: PID maps the file DEV (hexadecimal MAJ:MIN) INO.
maps_file() {
	local i dev
	dev=$(dev_norm "$2")
	sm_of "$1" || return 2
	for ((i = 0; i < ${#SM_PID[@]}; i++)); do
		[[ ${SM_INO[i]} == "$3" && $(dev_norm "${SM_DEV[i]}") == "$dev" ]] && return 0
	done
	return 1
}

# --- output ------------------------------------------------------------------

# prom_label VAR STRING: STRING as a Prometheus label value (without the
# quotes): escaped to ASCII first (esc), then backslash, double quote and
# newline as the text format wants them.
prom_label() {
	local _ps
	esc _ps "$2"
	_ps=${_ps//\\/\\\\}
	_ps=${_ps//\"/\\\"}
	printf -v "$1" '%s' "${_ps//$'\n'/\\n}"
}

# The processes whose counters --prom prints (one index each; names and
# values space-separated).
PR_PID=() PR_PROG=() PR_NAMES=() PR_VALUES=()

pr_add() {
	local IFS=' '
	PR_PID+=("$ST_PID") PR_PROG+=("$ST_PROG") PR_NAMES+=("${ST_NAMES[*]}") PR_VALUES+=("${ST_VALUES[*]}")
}

# prom_print: one metric family per counter name (in the order first seen):
# HELP, TYPE, then one sample per process that has it.
prom_print() {
	local i k name help label prog
	local -a names values order=()
	local -A seen=() sample=()
	for ((i = 0; i < ${#PR_PID[@]}; i++)); do
		read -r -a names <<<"${PR_NAMES[i]}"
		read -r -a values <<<"${PR_VALUES[i]}"
		prom_label prog "${PR_PROG[i]}"
		label="pid=\"${PR_PID[i]}\",prog=\"$prog\""
		for ((k = 0; k < ${#names[@]}; k++)); do
			name=${names[k]}
			[[ -n ${seen[$name]:-} ]] || order+=("$name")
			seen[$name]=1
			sample[$name]+="fdguard_${name}_total{$label} ${values[k]}"$'\n'
		done
	done
	for name in "${order[@]}"; do
		help=$(counter_desc "$name")
		help=${help//\\/\\\\}
		printf '# HELP fdguard_%s_total %s\n' "$name" "${help:-fdguard counter $name}"
		printf '# TYPE fdguard_%s_total counter\n' "$name"
		printf '%s' "${sample[$name]}"
	done
}

# stat_all JSON PROM: every process that maps a stats file of its own.
stat_all() {
	local json=$1 prom=$2 i pid q_prog q_file
	local -a pids=() progs=() files=() formats=() PF
	local -A shown=()
	sm_all
	for ((i = 0; i < ${#SM_PID[@]}; i++)); do
		pid=${SM_PID[i]}
		[[ -z ${shown[$pid]:-} ]] || continue
		stats_read "${SM_PATH[i]}" "$pid" "${SM_RANGE[i]}" "${SM_DEV[i]}" "${SM_INO[i]}" || continue
		[[ $ST_PID == "$pid" ]] || continue
		if [[ $ST_FORMAT == 2 ]]; then
			proc_fields "$pid" || continue
			[[ $ST_START == "${PF[19]}" ]] || continue
		fi
		shown[$pid]=1
		pids+=("$pid") progs+=("$ST_PROG") files+=("${SM_PATH[i]}") formats+=("$ST_FORMAT")
		pr_add
	done
	if ((SM_UNREADABLE > 0)) && [[ -z $json$prom ]]; then
		printf 'fdguard stat: processes not inspected (their /proc/PID/maps cannot be read%s): %d\n' \
			"$( ((EUID == 0)) || echo ': run as root')" "$SM_UNREADABLE" >&2
	fi
	if [[ -n $prom ]]; then
		prom_print
	elif [[ -n $json ]]; then
		printf '{"processes":['
		for ((i = 0; i < ${#pids[@]}; i++)); do
			((i > 0)) && printf ','
			json_q q_prog "${progs[i]}"
			json_q q_file "${files[i]}"
			printf '{"pid":%s,"prog":%s,"file":%s,"format":%s}' "${pids[i]}" "$q_prog" "$q_file" "${formats[i]}"
		done
		printf '],"not_inspected":%s}\n' "$SM_UNREADABLE"
	elif ((${#pids[@]} == 0)); then
		echo "no running process maps a stats file of its own (FDGUARD_STATS)"
	else
		{
			row PID PROG FILE
			for ((i = 0; i < ${#pids[@]}; i++)); do
				row "${pids[i]}" "${progs[i]}" "${files[i]}"
			done
		} | print_table
	fi
	exit 0
}

cmd_stat() {
	local arg json='' prom='' target='' file pid='' i warn='' rc q_file q_prog prog name
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
		--prom) prom=1 ;;
		-*) die_usage "unknown option: $arg" ;;
		'') die_usage "an empty argument (expected a PID, a FILE or all)" ;;
		*)
			[[ -z $target ]] || die_usage "more than one PID or FILE given"
			target=$arg
			;;
		esac
	done
	[[ -n $json && -n $prom ]] && die_usage "--json and --prom exclude each other"
	SR_BIN=$(find_bin statsread) || exit 1

	if [[ -z $target || $target == all ]]; then
		stat_all "$json" "$prom"
	fi

	if [[ $target =~ ^[0-9]+$ ]]; then
		need_pid "$target"
		pid=$PID
		stats_find "$pid"
		rc=$?
		case $rc in
		0) ;;
		3) warn=$STATS_WHY ;;
		*) die "$STATS_WHY" ;;
		esac
		file=$ST_PATH
	else
		[[ -z $prom ]] || die_usage "--prom takes a PID or all, not a file"
		file=$target
		stats_read "$file" || die "$STATS_WHY"
	fi

	stats_state
	prog=$ST_PROG
	case $ST_STATE in
	gone) [[ -n $warn ]] || warn="pid $ST_PID ($prog) in the header is not running: these are the last values it wrote" ;;
	exited) [[ -n $warn ]] || warn="pid $ST_PID ($prog) $(state_text): these are the last values it wrote" ;;
	reused) [[ -n $warn ]] || warn="pid $ST_PID in the header now belongs to another process (started later): these are the last values $prog wrote" ;;
	running)
		# Given a file: is it the one the process maps (or a copy)?
		if [[ -z $pid ]]; then
			maps_file "$ST_PID" "$ST_DEV" "$ST_INO"
			(($? != 1)) ||
				warn="pid $ST_PID ($prog) is running but does not map this file: a copy, or the file of an earlier process with this pid"
		fi
		;;
	esac

	if [[ -n $prom ]]; then
		[[ -z $warn ]] || die "$warn"
		pr_add
		prom_print
		exit 0
	fi
	if [[ -n $json ]]; then
		json_q q_file "$file"
		json_q q_prog "$ST_PROG"
		printf '{"file":%s,"format":%s,"pid":%s,"start":%s,"prog":%s,"running":%s,"state":"%s","ended":%s,"warning":%s,"read_via":"%s","counters":{' \
			"$q_file" "$ST_FORMAT" "$ST_PID" "$(json_num "$ST_START")" "$q_prog" \
			"$([[ $ST_STATE == running ]] && echo true || echo false)" "$ST_STATE" \
			"$([[ -n $ST_ENDED && $ST_ENDED != 0 ]] && json_num "$ST_ENDED" || echo null)" \
			"$([[ -n $warn ]] && json_str "$warn" || echo null)" "$ST_VIA"
		for ((i = 0; i < ${#ST_NAMES[@]}; i++)); do
			((i > 0)) && printf ','
			printf '"%s":%s' "${ST_NAMES[i]}" "${ST_VALUES[i]}"
		done
		printf '}}\n'
	else
		esc name "$file"
		esc prog "$ST_PROG"
		printf 'fdguard stat: %s%s\npid %s (%s), %s\n\n' "$name" "${ST_DELETED:+ (deleted)}" "$ST_PID" "$prog" \
			"$(state_text)"
		{
			row COUNTER VALUE MEANING
			for ((i = 0; i < ${#ST_NAMES[@]}; i++)); do
				row "${ST_NAMES[i]}" "${ST_VALUES[i]}" "$(counter_desc "${ST_NAMES[i]}")"
			done
		} | print_table
	fi
	if [[ -n $warn ]]; then
		esc warn "$warn"
		printf 'fdguard stat: warning: %s\n' "$warn" >&2
		exit 1
	fi
	exit 0
}
