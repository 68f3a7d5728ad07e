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

# squeeze_read FILE: the saved state into S_PID S_START S_SOFT S_HARD.
S_PID='' S_START='' S_SOFT='' S_HARD=''
squeeze_read() {
	local line
	[[ -f $1 && ! -L $1 && $(stat -c %u -- "$1") == "$EUID" ]] || return 1
	S_PID='' S_START='' S_SOFT='' S_HARD=''
	while IFS= read -r line; do
		case $line in
		'pid '*) S_PID=${line#pid } ;;
		'start '*) S_START=${line#start } ;;
		'soft '*) S_SOFT=${line#soft } ;;
		'hard '*) S_HARD=${line#hard } ;;
		esac
	done < <(head -c 1024 -- "$1")
	[[ $S_PID =~ ^[0-9]+$ && $S_START =~ ^[0-9]+$ && $S_SOFT =~ ^([0-9]+|unlimited)$ &&
		$S_HARD =~ ^([0-9]+|unlimited)$ ]]
}

cmd_squeeze() {
	local arg json='' free=0 restore='' pid='' soft hard start prog dir state tmp err fd target lowest
	local kept='' count=0 newsoft newhard
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
			check_uint --free "$1" 0 1048576
			free=$((10#$1))
			shift
			;;
		--free=*)
			check_uint --free "${arg#*=}" 0 1048576
			free=$((10#${arg#*=}))
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
	prog=$(proc_name "$pid")
	start=$(proc_start "$pid") || die "no process with pid $pid"
	read -r soft hard < <(limits_of "$pid" "Max open files") || die "cannot read /proc/$pid/limits"
	dir=$(squeeze_dir) || exit 1
	state=$dir/$pid

	if [[ -n $restore ]]; then
		if [[ ! -e $state ]]; then
			die "no saved limits for pid $pid ($prog): it was not squeezed by uid $EUID, or was restored already"
		fi
		squeeze_read "$state" || die "$state: not a valid state file of uid $EUID; remove it"
		if [[ $S_START != "$start" ]]; then
			rm -f -- "$state"
			die "pid $pid is not the squeezed process any more (it started at tick $start, the squeezed one at $S_START: pid reused); saved limits $S_SOFT:$S_HARD discarded"
		fi
		err=$(prlimit --pid "$pid" --nofile="$S_SOFT:$S_HARD" 2>&1) ||
			die "cannot restore the limits of pid $pid ($prog): ${err#prlimit: }"
		rm -f -- "$state"
		read -r newsoft newhard < <(limits_of "$pid" "Max open files")
		if [[ -n $json ]]; then
			printf '{"pid":%s,"prog":%s,"action":"restore","before":{"soft":%s,"hard":%s},"after":{"soft":%s,"hard":%s}}\n' \
				"$pid" "$(json_str "$prog")" "$(json_num "$soft")" "$(json_num "$hard")" \
				"$(json_num "$newsoft")" "$(json_num "$newhard")"
		else
			printf 'restored pid %s (%s): RLIMIT_NOFILE %s:%s -> %s:%s (soft:hard)\n' "$pid" "$prog" \
				"$soft" "$hard" "$newsoft" "$newhard"
		fi
		exit 0
	fi

	# The (free+1)th free number: exactly `free` numbers below it are free.
	# Walking the open numbers in order, each one at or below the candidate
	# pushes it up by one.
	local -a fds=()
	for fd in "/proc/$pid/fd"/*; do
		fds+=("${fd##*/}")
	done
	count=${#fds[@]}
	((count > 0)) || [[ -r /proc/$pid/fd ]] ||
		die "cannot read the descriptors of pid $pid ($prog): permission denied"
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
	if squeeze_read "$state" 2>/dev/null && [[ $S_START == "$start" ]]; then
		kept="$S_SOFT:$S_HARD"
	else
		tmp=$(mktemp "$dir/.$pid.XXXXXX") || die "cannot write in $dir"
		printf 'pid %s\nstart %s\nsoft %s\nhard %s\nprog %s\n' "$pid" "$start" "$soft" "$hard" "$prog" >"$tmp"
		mv -f -- "$tmp" "$state" || die "cannot write $state"
	fi
	if ! err=$(prlimit --pid "$pid" --nofile="$target:" 2>&1); then
		[[ -z $kept ]] && rm -f -- "$state"
		die "cannot lower the limit of pid $pid ($prog): ${err#prlimit: }"
	fi
	read -r newsoft newhard < <(limits_of "$pid" "Max open files")
	if [[ -n $json ]]; then
		printf '{"pid":%s,"prog":%s,"action":"squeeze","free":%s,"open":%s,"lowest_free":%s,"before":{"soft":%s,"hard":%s},"after":{"soft":%s,"hard":%s},"saved":%s}\n' \
			"$pid" "$(json_str "$prog")" "$free" "$count" "$lowest" "$(json_num "$soft")" "$(json_num "$hard")" \
			"$(json_num "$newsoft")" "$(json_num "$newhard")" "$(json_str "${kept:-$soft:$hard}")"
	else
		printf 'squeezed pid %s (%s): soft RLIMIT_NOFILE %s -> %s (hard %s)\n' "$pid" "$prog" "$soft" "$newsoft" "$newhard"
		printf '%s descriptors open, lowest free number %s: %s free below the limit\n' "$count" "$lowest" "$free"
		printf 'restore with: fdguard squeeze %s --restore (back to %s)\n' "$pid" "${kept:-$soft:$hard}"
	fi
	exit 0
}

