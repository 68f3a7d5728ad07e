# fdguard squeeze: lower a process's descriptor limit to what it uses (and
# restore it).
# shellcheck shell=bash source-path=SCRIPTDIR

# shellcheck source=common.bash
. "${BASH_SOURCE[0]%/*}/common.bash"

usage_squeeze() {
	cat <<'EOF'
Usage: fdguard squeeze PID [--free N] [--json]
       fdguard squeeze PID --restore [--json]

Reproduces descriptor exhaustion in a running process, for CI and drills:
lowers the soft RLIMIT_NOFILE of PID (prlimit) so that exactly N descriptor
numbers are free below it. The kernel always hands out the lowest free
number and refuses numbers at or above the soft limit, so with --free 0 the
limit becomes the lowest free number: the next accept, open or socket fails
with EMFILE. With --free N it is the (N+1)th free number: N more descriptors
can be opened, whatever holes the table has. Descriptors already open above
the new limit keep working. The hard limit is not touched. A process that
opens or closes descriptors meanwhile changes the picture: squeeze it idle.

Changing the limits of another user's process (a daemon that dropped its
privileges) needs CAP_SYS_RESOURCE, which root in a container often lacks:
then the change is made as the process's own uid and gid (setpriv --reuid
--regid --clear-groups prlimit ...), which the kernel allows when its real,
effective and saved ids agree; --restore does the same.

The previous soft:hard limits are saved in /tmp/fdguard-squeeze-UID/PID
(a private directory) together with the process's start time; --restore puts
them back exactly, and refuses if the pid now belongs to another process.
Squeezing again keeps the limits saved first.

Options:
  --free N    descriptors left free (0..1048576, default 0)
  --restore   put back the limits saved by the first squeeze
  --json      one JSON object
  -h, --help  show this help

Exit status: 0 done, 1 no such process, not permitted, nothing saved, or pid
reused, 2 usage error.
EOF
}

# nofile_set PID SOFT:HARD: prlimit --pid PID --nofile=SOFT:HARD (HARD may
# be empty: unchanged). Changing another uid's limits needs CAP_SYS_RESOURCE
# (the kernel's check_prlimit_permission), which root in a container often
# lacks and which a daemon that dropped privileges (to its own user) puts out
# of reach. The process's own uid and gid may change them, when its real,
# effective and saved ids are all equal: on EPERM the call is made again as
# those (setpriv, no supplementary groups). Sets NS_AS to "UID:GID" when it
# went that way, NS_ERR to the error when it failed.
NS_AS='' NS_ERR=''
nofile_set() {
	local pid=$1 limits=$2 err
	local -a u g
	NS_AS='' NS_ERR=''
	err=$(prlimit --pid "$pid" --nofile="$limits" 2>&1) && return 0
	NS_ERR=${err#prlimit: }
	[[ $err == *'Operation not permitted'* ]] || return 1
	read -r -a u < <(awk '/^Uid:/ { print $2, $3, $4 }' "/proc/$pid/status" 2>/dev/null)
	read -r -a g < <(awk '/^Gid:/ { print $2, $3, $4 }' "/proc/$pid/status" 2>/dev/null)
	if ((${#u[@]} != 3 || ${#g[@]} != 3)); then
		return 1
	elif [[ "${u[*]} ${g[*]}" != "${u[0]} ${u[0]} ${u[0]} ${g[0]} ${g[0]} ${g[0]}" ]]; then
		NS_ERR+="; its real, effective and saved ids differ (uid ${u[*]}, gid ${g[*]}): only CAP_SYS_RESOURCE can"
		return 1
	elif [[ ${u[0]} == "$EUID" ]]; then
		return 1
	fi
	if ! err=$(setpriv --reuid="${u[0]}" --regid="${g[0]}" --clear-groups -- \
		prlimit --pid "$pid" --nofile="$limits" 2>&1); then
		NS_ERR+="; as its uid ${u[0]} gid ${g[0]} (setpriv): ${err#prlimit: }"
		return 1
	fi
	NS_AS="${u[0]}:${g[0]}"
}

# as_text: how the limit was set, for the text output.
as_text() {
	[[ -z $NS_AS ]] || printf ' (as its uid %s gid %s: another uid'"'"'s limit needs CAP_SYS_RESOURCE)' "${NS_AS%:*}" "${NS_AS#*:}"
}

# squeeze_dir: the private state directory (created 0700; must be ours).
squeeze_dir() {
	local dir=/tmp/fdguard-squeeze-$EUID owner mode
	if [[ ! -e $dir && ! -L $dir ]]; then
		mkdir -m 0700 -- "$dir" 2>/dev/null || [[ -d $dir ]] || die "cannot create $dir"
	fi
	if [[ -L $dir || ! -d $dir ]]; then
		die "$dir is not a directory (or is a symbolic link): refusing to use it"
	fi
	read -r owner mode < <(stat -c '%u %a' -- "$dir")
	if [[ $owner != "$EUID" ]] || ((8#$mode & 8#077)); then
		die "$dir is not a private directory of uid $EUID (owner $owner, mode $mode): refusing to use it"
	fi
	printf '%s\n' "$dir"
}

# squeeze_read FILE PID: the saved state of PID into S_START S_SOFT S_HARD.
# The file is ours (written below): exactly five lines, the name escaped.
S_START='' S_SOFT='' S_HARD=''
SQUEEZE_RE=$'^pid ([1-9][0-9]*)\nstart ([0-9]+)\nsoft ([0-9]+|unlimited)\nhard ([0-9]+|unlimited)\nprog [ -~]*\n$'
squeeze_read() {
	local content=''
	S_START='' S_SOFT='' S_HARD=''
	[[ -f $1 && ! -L $1 && $(stat -c %u -- "$1") == "$EUID" ]] || return 1
	{ IFS= read -r -d '' content < <(head -c 1024 -- "$1"); } 2>/dev/null
	[[ $content =~ $SQUEEZE_RE && ${BASH_REMATCH[1]} == "$2" ]] || return 1
	S_START=${BASH_REMATCH[2]} S_SOFT=${BASH_REMATCH[3]} S_HARD=${BASH_REMATCH[4]}
}

cmd_squeeze() {
	local arg json='' free=0 restore='' pid='' soft hard start prog dir state tmp err fd target lowest
	local kept='' count=0 newsoft newhard name free_given=''
	tools_init
	while (($# > 0)); do
		arg=$1
		shift
		case $arg in
		-h | --help)
			usage_squeeze
			exit 0
			;;
		--json) json=1 ;;
		--restore) restore=1 ;;
		--free)
			(($# > 0)) || die_usage "option --free requires a value"
			set -- "--free=$1" "${@:2}"
			continue
			;;
		--free=*)
			[[ -z $free_given ]] || die_usage "--free given twice"
			check_uint --free "${arg#*=}" 0 1048576
			free=$((10#${arg#*=})) free_given=1
			;;
		-*) die_usage "unknown option: $arg" ;;
		*)
			[[ -z $pid ]] || die_usage "more than one PID given"
			need_pid "$arg"
			pid=$PID
			;;
		esac
	done
	[[ -n $pid ]] || die_usage "no PID given"
	[[ -z $restore || -z $free_given ]] || die_usage "--restore and --free exclude each other"
	prog=$(proc_name "$pid")
	start=$(proc_start "$pid") || die "no process with pid $pid"
	read -r soft hard < <(limits_of "$pid" "Max open files") || die "cannot read /proc/$pid/limits"
	dir=$(squeeze_dir) || exit 1
	state=$dir/$pid

	if [[ -n $restore ]]; then
		if [[ ! -e $state ]]; then
			die "no saved limits for pid $pid ($prog): it was not squeezed by uid $EUID, or was restored already"
		fi
		squeeze_read "$state" "$pid" || die "$state: not a valid state file of uid $EUID; remove it"
		if [[ $S_START != "$start" ]]; then
			rm -f -- "$state"
			die "pid $pid is not the squeezed process any more (it started at tick $start, the squeezed one at $S_START: pid reused); saved limits $S_SOFT:$S_HARD discarded"
		fi
		nofile_set "$pid" "$S_SOFT:$S_HARD" ||
			die "cannot restore the limits of pid $pid ($prog): $NS_ERR"
		rm -f -- "$state"
		read -r newsoft newhard < <(limits_of "$pid" "Max open files")
		if [[ -n $json ]]; then
			printf '{"pid":%s,"prog":%s,"action":"restore","before":{"soft":%s,"hard":%s},"after":{"soft":%s,"hard":%s},"as":%s}\n' \
				"$pid" "$(json_str "$prog")" "$(json_num "$soft")" "$(json_num "$hard")" \
				"$(json_num "$newsoft")" "$(json_num "$newhard")" "$([[ -n $NS_AS ]] && json_str "$NS_AS" || echo null)"
		else
			esc prog "$prog"
			printf 'restored pid %s (%s): RLIMIT_NOFILE %s:%s -> %s:%s (soft:hard)%s\n' "$pid" "$prog" \
				"$soft" "$hard" "$newsoft" "$newhard" "$(as_text)"
		fi
		exit 0
	fi

	# The (free+1)th free number: exactly `free` numbers below it are free.
	# Walking the open numbers in order, each one at or below the candidate
	# pushes it up by one.
	local -a fds=()
	# Listed, not globbed: a table that cannot be read is not an empty one.
	fd=$(ls -U "/proc/$pid/fd" 2>/dev/null) || die "cannot read the descriptors of pid $pid ($prog): permission denied"
	read -r -d '' -a fds <<<"$fd"
	count=${#fds[@]}
	if [[ $hard != unlimited ]] && ((free > hard)); then
		die "cannot leave $free descriptors free in pid $pid: the hard limit is $hard"
	fi
	mapfile -t fds < <(printf '%s\n' "${fds[@]}" | sort -n)
	target=$free lowest=0
	for fd in "${fds[@]}"; do
		((fd == lowest)) && lowest=$((lowest + 1))
		((fd <= target)) || break
		target=$((target + 1))
	done
	if [[ $hard != unlimited ]] && ((target > hard)); then
		die "cannot leave $free descriptors free in pid $pid: that needs a soft limit of $target, above the hard limit $hard"
	fi

	# Save the limits before the first squeeze (a second squeeze keeps them).
	if squeeze_read "$state" "$pid" 2>/dev/null && [[ $S_START == "$start" ]]; then
		kept="$S_SOFT:$S_HARD"
	else
		tmp=$(mktemp "$dir/.$pid.XXXXXX") || die "cannot write in $dir"
		esc name "$prog"
		printf 'pid %s\nstart %s\nsoft %s\nhard %s\nprog %s\n' "$pid" "$start" "$soft" "$hard" "$name" >"$tmp"
		mv -f -- "$tmp" "$state" || die "cannot write $state"
	fi
	if ! nofile_set "$pid" "$target:"; then
		[[ -z $kept ]] && rm -f -- "$state"
		die "cannot lower the limit of pid $pid ($prog): $NS_ERR"
	fi
	read -r newsoft newhard < <(limits_of "$pid" "Max open files")
	if [[ -n $json ]]; then
		printf '{"pid":%s,"prog":%s,"action":"squeeze","free":%s,"open":%s,"lowest_free":%s,"before":{"soft":%s,"hard":%s},"after":{"soft":%s,"hard":%s},"saved":%s,"as":%s}\n' \
			"$pid" "$(json_str "$prog")" "$free" "$count" "$lowest" "$(json_num "$soft")" "$(json_num "$hard")" \
			"$(json_num "$newsoft")" "$(json_num "$newhard")" "$(json_str "${kept:-$soft:$hard}")" \
			"$([[ -n $NS_AS ]] && json_str "$NS_AS" || echo null)"
	else
		esc prog "$prog"
		printf 'squeezed pid %s (%s): soft RLIMIT_NOFILE %s -> %s (hard %s)%s\n' "$pid" "$prog" "$soft" "$newsoft" \
			"$newhard" "$(as_text)"
		printf '%s descriptors open, lowest free number %s: %s free below the limit\n' "$count" "$lowest" "$free"
		printf 'restore with: fdguard squeeze %s --restore (back to %s)\n' "$pid" "${kept:-$soft:$hard}"
	fi
	exit 0
}

