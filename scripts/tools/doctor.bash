# fdguard doctor: a host and a process against every limit behind EMFILE,
# ENOMEM, EAGAIN and shmget ENOSPC.
# shellcheck shell=bash source-path=SCRIPTDIR

# shellcheck source=common.bash
. "${BASH_SOURCE[0]%/*}/common.bash"
# The stats file reader (stat) and the System V scan (ipc).
# shellcheck source=stat.bash
. "${BASH_SOURCE[0]%/*}/stat.bash"
# shellcheck source=ipc.bash
. "${BASH_SOURCE[0]%/*}/ipc.bash"

# human BYTES: 1.5G style (IEC), or the value itself when not a number.
human() {
	if [[ $1 =~ ^[0-9]+$ ]] && ((${#1} < 19)); then
		numfmt --to=iec --format='%.1f' "$1" 2>/dev/null | sed 's/\.0\([KMGTPE]\?\)$/\1/' || printf '%s\n' "$1"
	else
		printf '%s\n' "$1"
	fi
}

# unit_of PID: the systemd service PID runs in (from its cgroup path), or nothing.
unit_of() {
	local line comp
	while IFS= read -r line; do
		case $line in
		0::* | *:name=systemd:*)
			line=${line#*:*:}
			while [[ -n $line ]]; do
				comp=${line##*/}
				if [[ $comp == *.service ]]; then
					printf '%s\n' "$comp"
					return 0
				fi
				[[ $line == */* ]] || break
				line=${line%/*}
			done
			;;
		esac
	done 2>/dev/null <"/proc/$1/cgroup"
	return 1
}

usage_doctor() {
	cat <<'EOF'
Usage: fdguard doctor [PID] [--json]

Checks the host, and the process PID if given, against every limit behind
"Too many open files", "failed to map segment", "Resource temporarily
unavailable" and "No space left on device" (shmget). Each line: the figure,
its limit, the use in percent, a status and the fix an operator applies.

  OK    below 80% of the limit
  WARN  over 80% of the limit (or an orphaned System V object)
  FAIL  at or over the limit, or a stale epoll registration
  N/A   not measurable here (the line says why), or "cannot inspect": a
        /proc file of the process is not readable (another user's process,
        or one that is not dumpable); never reported as OK

Host: open files (fs.file-nr / fs.file-max), threads (kernel.threads-max,
kernel.pid_max), System V shared memory segments and pages (kernel.shmmni,
kernel.shmall), semaphore sets and semaphores (kernel.sem), message queues
(kernel.msgmni), and your orphaned System V objects (see fdguard ipc).

Process: descriptors against the soft and hard RLIMIT_NOFILE (free numbers
below the soft limit: a new descriptor needs one); memory mappings (lines of
/proc/PID/maps) against vm.max_map_count; threads against kernel.threads-max
and kernel.pid_max; the tasks and memory of its cgroup against pids.max and
memory.max (v2) or memory.limit_in_bytes (v1), the tightest of its cgroup and
the cgroups above it; address space and locked memory against RLIMIT_AS and
RLIMIT_MEMLOCK; every epoll instance it holds: the descriptors registered in
it (tfd lines of /proc/PID/fdinfo/EPFD) and the stale ones among them (the
number is closed, or now names another file: inode or device differ);
whether libfdguard.so is loaded, and its counters if it has a stats file.

An epoll instance shared with another process (fork) lists that process's
registrations too; they are judged against PID's descriptor table.

Options:
  --json      one JSON object: {"status", "host", "process", "checks": [...],
              "not_inspected"}; each check says whether it was "inspected"
  -h, --help  show this help

Exit status: 0 all OK, 1 something is WARN or FAIL, or could not be
inspected, 2 usage error.
EOF
}

# The checks, in the order they are printed. CK_BLIND: 1 when the check could
# not read what it measures (never OK, and doctor exits 1).
CK_ID=() CK_SCOPE=() CK_LABEL=() CK_VALUE=() CK_LIMIT=() CK_UNIT=() CK_STATUS=() CK_NOTE=() CK_FIX=()
CK_BLIND=()

# add_check ID SCOPE LABEL VALUE LIMIT UNIT NOTE FIX [STATUS]: STATUS, when
# not given, comes from VALUE against LIMIT (FAIL at or over the limit, WARN
# over 80%). UNIT is count or bytes. The fix is only kept for WARN and FAIL.
add_check() {
	local status=${9:-} nodata=0
	if [[ -z $status ]]; then
		# A figure that could not be read is never judged (nor computed with).
		if [[ ! $4 =~ ^[0-9]{1,18}$ ]] || ! { is_unlimited "$5" || [[ $5 =~ ^[0-9]{1,18}$ ]]; }; then
			status=N/A nodata=1
		elif is_unlimited "$5"; then
			status=OK
		elif (($4 >= $5 && ($5 > 0 || $4 > 0))); then
			status=FAIL
		elif (($4 * 100 > $5 * 80)); then
			status=WARN
		else
			status=OK
		fi
	fi
	CK_ID+=("$1") CK_SCOPE+=("$2") CK_LABEL+=("$3") CK_VALUE+=("$4") CK_LIMIT+=("$5")
	CK_UNIT+=("$6") CK_NOTE+=("$7") CK_STATUS+=("$status") CK_BLIND+=("$nodata")
	if [[ $status == WARN || $status == FAIL ]]; then
		CK_FIX+=("$8")
	else
		CK_FIX+=("")
	fi
}

# add_blind ID LABEL WHAT: a process check that cannot be made: WHAT (a /proc
# file) cannot be read.
add_blind() {
	add_check "$1" process "$2" - "" count "cannot inspect: $3 is not readable (permission denied)" "" N/A
	CK_BLIND[${#CK_BLIND[@]} - 1]=1
}

# readable FILE: FILE can be opened (for /proc/PID files that is the kernel's
# ptrace check, which the mode bits do not show).
readable() {
	{ : <"$1"; } 2>/dev/null
}

# twice N [MIN]: sets TW to a suggested new limit: 2*N, at least MIN (no
# subshell: doctor makes many of these).
TW=''
twice() {
	local n=$1 min=${2:-0}
	if [[ ! $n =~ ^[0-9]+$ ]] || ((${#n} > 17)); then
		TW=$n
	elif ((2 * n < min)); then
		TW=$min
	else
		TW=$((2 * n))
	fi
}

# cgroup_levels CONTROLLER PID: the cgroup directories of PID for CONTROLLER,
# from its own up to the top of the hierarchy, one per line, after a first
# line "v1" or "v2". Fails when none is found under /sys/fs/cgroup.
cgroup_levels() {
	local ctrl=$1 pid=$2 line id ctrls path v2path='' root dir
	while IFS= read -r line; do
		id=${line%%:*}
		line=${line#*:}
		ctrls=${line%%:*}
		path=${line#*:}
		if [[ -n $ctrls && ,$ctrls, == *,"$ctrl",* ]]; then
			root=/sys/fs/cgroup/$ctrl
			if [[ -d $root$path ]]; then
				echo v1
				dir=$root${path%/}
				while :; do
					printf '%s\n' "$dir"
					[[ $dir == "$root" ]] && return 0
					dir=${dir%/*}
				done
			fi
		elif [[ $id == 0 && -z $ctrls ]]; then
			v2path=$path
		fi
	done <"/proc/$pid/cgroup"
	[[ -n $v2path ]] || return 1
	root=/sys/fs/cgroup
	[[ -f $root/cgroup.controllers ]] || root=/sys/fs/cgroup/unified
	[[ -f $root/cgroup.controllers && -d $root$v2path ]] || return 1
	# The root cgroup has no limit files: the controller is v2 only if some
	# level has them.
	dir=$root${v2path%/}
	[[ -e $dir/$ctrl.max || -e ${dir%/*}/$ctrl.max ]] || return 1
	echo v2
	while [[ $dir != "$root" ]]; do
		printf '%s\n' "$dir"
		dir=${dir%/*}
	done
}

# cgroup_check ID LABEL CONTROLLER PID UNIT: the level with the highest use of
# its limit (limit files LIMITFILE/USEFILE per version) becomes a check.
cgroup_check() {
	local id=$1 label=$2 ctrl=$3 pid=$4 unit=$5 ver limitf usef dir lim use
	local best_dir='' best_lim='' best_use='' leaf_use='' rel fix
	local -a levels
	mapfile -t levels < <(cgroup_levels "$ctrl" "$pid" 2>/dev/null)
	if ((${#levels[@]} < 2)); then
		add_check "$id" process "$label" 0 "" "$unit" "no $ctrl cgroup found under /sys/fs/cgroup" "" N/A
		return
	fi
	ver=${levels[0]}
	case $ctrl/$ver in
	memory/v1) limitf=memory.limit_in_bytes usef=memory.usage_in_bytes ;;
	memory/v2) limitf=memory.max usef=memory.current ;;
	pids/*) limitf=pids.max usef=pids.current ;;
	esac
	for dir in "${levels[@]:1}"; do
		[[ -r $dir/$limitf && -r $dir/$usef ]] || continue
		lim=$(<"$dir/$limitf") use=$(<"$dir/$usef")
		[[ -z $leaf_use ]] && leaf_use=$use
		is_unlimited "$lim" && continue
		if [[ -z $best_dir ]] || ((use * 1000 / (lim > 0 ? lim : 1) > best_use * 1000 / (best_lim > 0 ? best_lim : 1))); then
			best_dir=$dir best_lim=$lim best_use=$use
		fi
	done
	rel=${levels[1]#/sys/fs/cgroup/}
	if [[ -z $leaf_use ]]; then
		if ((${#levels[@]} == 2)); then
			add_check "$id" process "$label" - unlimited "$unit" "cgroup $ver $rel: the root cgroup (no limit)" "" OK
		else
			add_check "$id" process "$label" - "" "$unit" "cgroup $ver $rel: no $usef here" "" N/A
		fi
		return
	fi
	if [[ -z $best_dir ]]; then
		add_check "$id" process "$label" "$leaf_use" unlimited "$unit" "cgroup $ver $rel (no limit up to the root)" ""
		return
	fi
	local suggest
	twice "$best_lim"
	suggest=$TW
	fix="echo $suggest > $best_dir/$limitf"
	case $ctrl in
	memory) fix+="; persist: MemoryMax= in the unit" ;;
	pids) fix+="; persist: TasksMax= in the unit" ;;
	esac
	add_check "$id" process "$label" "$best_use" "$best_lim" "$unit" "cgroup $ver ${best_dir#/sys/fs/cgroup/}" "$fix"
}

doctor_host() {
	local alloc unused fmax threads pidmax tmax shmmni shmall page segs pages
	local msl mns opm mni arrays sems msgmni queues
	read -r alloc unused fmax </proc/sys/fs/file-nr
	twice "$fmax"
	add_check open_files host "open files (system)" $((alloc - unused)) "$fmax" count "fs.file-nr" \
		"sysctl -w fs.file-max=$TW"

	threads=$(ps -e -o nlwp= | awk '{ s += $1 } END { print s + 0 }')
	tmax=$(</proc/sys/kernel/threads-max)
	pidmax=$(</proc/sys/kernel/pid_max)
	twice "$tmax"
	add_check threads host "threads (system)" "$threads" "$tmax" count "kernel.threads-max" \
		"sysctl -w kernel.threads-max=$TW"
	add_check pids host "pids in use (system)" "$threads" "$pidmax" count "kernel.pid_max" \
		"sysctl -w kernel.pid_max=4194304"

	if [[ -r /proc/sysvipc/shm ]]; then
		page=$(getconf PAGESIZE 2>/dev/null) || page=4096
		shmmni=$(</proc/sys/kernel/shmmni) shmall=$(</proc/sys/kernel/shmall)
		read -r segs pages < <(awk -v ps="$page" 'NR > 1 { n++; p += int(($4 + ps - 1) / ps) } END { printf "%d %d\n", n, p }' /proc/sysvipc/shm)
		twice "$shmmni"
		add_check sysv_shm_segments host "System V shm segments" "$segs" "$shmmni" count "kernel.shmmni" \
			"fdguard ipc (orphans?); sysctl -w kernel.shmmni=$TW"
		twice "$shmall"
		add_check sysv_shm_pages host "System V shm pages" "$pages" "$shmall" count "kernel.shmall" \
			"fdguard ipc (orphans?); sysctl -w kernel.shmall=$TW"
		read -r msl mns opm mni </proc/sys/kernel/sem
		read -r arrays sems < <(awk 'NR > 1 { n++; s += $4 } END { printf "%d %d\n", n, s }' /proc/sysvipc/sem)
		twice "$mni"
		add_check sysv_sem_arrays host "System V semaphore sets" "$arrays" "$mni" count "kernel.sem SEMMNI" \
			"fdguard ipc (orphans?); sysctl -w kernel.sem=\"$msl $mns $opm $TW\""
		twice "$mns"
		add_check sysv_semaphores host "System V semaphores" "$sems" "$mns" count "kernel.sem SEMMNS" \
			"fdguard ipc (orphans?); sysctl -w kernel.sem=\"$msl $TW $opm $mni\""
		msgmni=$(</proc/sys/kernel/msgmni)
		twice "$msgmni"
		queues=$(awk 'NR > 1 { n++ } END { print n + 0 }' /proc/sysvipc/msg)
		add_check sysv_msg_queues host "System V message queues" "$queues" "$msgmni" count "kernel.msgmni" \
			"fdguard ipc (orphans?); sysctl -w kernel.msgmni=$TW"
		ipc_scan
		local n=$((IPC_N_ORPHAN + IPC_N_UNKNOWN)) note status=OK
		note="$IPC_N_ORPHAN orphaned, $IPC_N_UNKNOWN with creator unknown (objects of uid $EUID)"
		((n > 0)) && status=WARN
		add_check sysv_orphans host "System V objects left by dead processes" "$n" "" count "$note" \
			"fdguard ipc --reap (the unknown ones: check them with fdguard ipc)" "$status"
	else
		add_check sysv_shm_segments host "System V IPC" 0 "" count "/proc/sysvipc not readable" "" N/A
	fi
}

# epoll_regs FILE: the registrations in FILE (an epoll instance's fdinfo)
# into R_TFD, R_INO, R_DEV (the registered number and its file's inode and
# device); fails when FILE cannot be read.
R_TFD=() R_INO=() R_DEV=()
epoll_regs() {
	local line w ino dev text
	local -a words
	R_TFD=() R_INO=() R_DEV=()
	text=$(<"$1") || return 1
	while IFS= read -r line; do
		[[ $line == tfd:* ]] || continue
		read -r -a words <<<"$line"
		ino='' dev=''
		for w in "${words[@]}"; do
			case $w in
			ino:*) ino=$((16#${w#ino:})) ;;
			# The kernel's dev_t: major << 20 | minor.
			sdev:*) dev=$((16#${w#sdev:})) dev="$((dev >> 20)):$((dev & 0xfffff))" ;;
			esac
		done
		R_TFD+=("${words[1]}") R_INO+=("$ino") R_DEV+=("$dev")
	done <<<"$text"
}

# doctor_epoll PID: one check per epoll instance of PID.
doctor_epoll() {
	local pid=$1 i line epfd watched stale tfd n=0 path ino dev note status err
	local -a epfds=() tfds=() inos=() devs=() paths=() why
	local -A now=() still=()
	# One ls for the whole table, one stat per 4096 registered numbers: a
	# server with thousands of descriptors must not cost a process each.
	# Which descriptor is an epoll instance is only in the link targets, which
	# need the same access as fdinfo: without it nothing can be said.
	# (C locale: ls and stat say "Permission denied".)
	err=$(ls -l "/proc/$pid/fd/" 2>&1)
	if [[ $err == *'ls: '*'Permission denied'* ]]; then
		add_blind epoll "epoll instances" "/proc/$pid/fd (its link targets)"
		return
	fi
	while IFS= read -r line; do
		[[ $line == *' -> anon_inode:[eventpoll]' ]] || continue
		line=${line% -> anon_inode:\[eventpoll\]}
		line=${line##* }
		[[ $line =~ ^[0-9]+$ ]] && epfds+=("$line")
	done <<<"$err"
	for epfd in "${epfds[@]}"; do
		n=$((n + 1))
		tfds=() inos=() devs=() paths=() why=() now=()
		if ! readable "/proc/$pid/fdinfo/$epfd"; then
			[[ -e /proc/$pid/fdinfo/$epfd ]] || continue # closed meanwhile
			add_blind "epoll_$epfd" "epoll fd $epfd: stale registrations" "/proc/$pid/fdinfo/$epfd"
			continue
		fi
		epoll_regs "/proc/$pid/fdinfo/$epfd" 2>/dev/null || continue # closed meanwhile
		tfds=("${R_TFD[@]}") inos=("${R_INO[@]}") devs=("${R_DEV[@]}")
		for tfd in "${tfds[@]}"; do
			paths+=("/proc/$pid/fd/$tfd")
		done
		err=''
		for ((i = 0; i < ${#paths[@]}; i += 4096)); do
			while read -r path ino dev; do
				if [[ $path == /proc/* ]]; then
					now[${path##*/}]="$ino $dev"
				elif [[ "$path $ino $dev" == *'Permission denied' ]]; then
					err=1 # a number that cannot be looked at is not a closed one
				fi
			done < <(stat -L -c '%n %i %Hd:%Ld' -- "${paths[@]:i:4096}" 2>&1)
		done
		if [[ -n $err ]]; then
			add_blind "epoll_$epfd" "epoll fd $epfd: stale registrations" "/proc/$pid/fd (the registered descriptors)"
			continue
		fi
		# The process runs on while we look: a registration deleted (and its
		# number closed or reused) after the first read is not stale. Only
		# one that is still there, for the same file, after the descriptors
		# were looked at counts.
		epoll_regs "/proc/$pid/fdinfo/$epfd" 2>/dev/null || continue
		still=()
		for ((i = 0; i < ${#R_TFD[@]}; i++)); do
			still["${R_TFD[i]} ${R_INO[i]} ${R_DEV[i]}"]=1
		done
		watched=${#R_TFD[@]} stale=0
		for ((i = 0; i < ${#tfds[@]}; i++)); do
			tfd=${tfds[i]}
			[[ -n ${still["$tfd ${inos[i]} ${devs[i]}"]:-} ]] || continue
			if [[ -z ${now[$tfd]:-} ]]; then
				stale=$((stale + 1))
				why+=("fd $tfd closed")
			elif [[ -n ${inos[i]} && ${now[$tfd]} != "${inos[i]} ${devs[i]}" ]]; then
				stale=$((stale + 1))
				why+=("fd $tfd now names another file")
			fi
		done
		note="$watched registered" status=OK
		if ((stale > 0)); then
			status=FAIL
			note+=", $stale stale: ${why[0]}"
			for ((i = 1; i < ${#why[@]} && i < 8; i++)); do
				note+=", ${why[i]}"
			done
			((stale > 8)) && note+=", and $((stale - 8)) more"
		fi
		add_check "epoll_$epfd" process "epoll fd $epfd: stale registrations" "$stale" "" count "$note" \
			"restart the process to clear them; run it under fdguard (EPOLL_CTL_DEL before every close/dup2)" "$status"
	done
	if ((n == 0)); then
		add_check epoll process "epoll instances" 0 "" count "none" "" OK
	fi
}

# proc_env PID: sets ENV_VARS to the initial environment of PID (NAME=VALUE
# each); fails when it cannot be read. (Only a hint: daemons rewrite it.)
ENV_VARS=()
proc_env() {
	ENV_VARS=()
	{ mapfile -d '' -t ENV_VARS <"/proc/$1/environ"; } 2>/dev/null
}

# doctor_fdguard PID: is the shim loaded, enabled, and what do its counters
# say (the stats file it maps, as fdguard stat finds it).
doctor_fdguard() {
	local pid=$1 env loaded note i rc nz=()
	if ! sm_of "$pid"; then
		add_blind fdguard "fdguard" "/proc/$pid/maps"
		return
	fi
	loaded=${SM_SHIM[$pid]:-}
	if [[ -z $loaded ]]; then
		add_check fdguard process "fdguard" no "" count "not loaded (fdguard run -- CMD guards a program)" "" OK
		return
	fi
	note="loaded ($loaded)"
	if proc_env "$pid"; then
		for env in "${ENV_VARS[@]}"; do
			case $env in
			FDGUARD=off) note+=", disabled: FDGUARD=off" ;;
			FDGUARD_ONLY=*) note+=", $env" ;;
			esac
		done
	fi
	stats_find "$pid"
	rc=$?
	if ((rc == 0 || rc == 3)); then
		for ((i = 0; i < ${#ST_NAMES[@]}; i++)); do
			[[ ${ST_VALUES[i]} == 0 ]] || nz+=("${ST_NAMES[i]}=${ST_VALUES[i]}")
		done
		note+=", counters in $ST_PATH: ${nz[*]:-all zero}"
		((rc == 0)) || note+=" ($STATS_WHY)"
	elif ((rc == 2)); then
		note+=", stats: $STATS_WHY"
	else
		note+=", no stats file (FDGUARD_STATS)"
	fi
	add_check fdguard process "fdguard" yes "" count "$note" "" OK
}

doctor_process() {
	local pid=$1 soft hard count=0 below=0 above lowest suggest unit persist fd nropen fds
	local maps mapmax threads tmax pidmax vmsize vmlck as_soft as_hard ml_soft ml_hard fix
	local -A open=()
	read -r soft hard < <(limits_of "$pid" "Max open files")
	unit=$(unit_of "$pid") || unit=''
	if [[ -n $unit ]]; then
		persist="persist: LimitNOFILE=%s in $unit (systemctl edit $unit)"
	else
		persist="persist: LimitNOFILE=%s in its unit, or ulimit -n %s where it is started"
	fi
	# The table: listed (a glob would turn "not readable" into "empty").
	if [[ ! $soft =~ ^([0-9]+|unlimited)$ ]]; then
		add_blind nofile_soft "descriptors (soft RLIMIT_NOFILE)" "/proc/$pid/limits"
		add_blind nofile_hard "descriptors (hard RLIMIT_NOFILE)" "/proc/$pid/limits"
	elif ! fds=$(ls -U "/proc/$pid/fd" 2>/dev/null); then
		add_blind nofile_soft "descriptors (soft RLIMIT_NOFILE)" "/proc/$pid/fd"
		add_blind nofile_hard "descriptors (hard RLIMIT_NOFILE)" "/proc/$pid/fd"
	else
		for fd in $fds; do
			open[$fd]=1
			count=$((count + 1))
			if [[ $soft == unlimited ]] || ((fd < soft)); then
				below=$((below + 1))
			fi
		done
		lowest=0
		while [[ -n ${open[$lowest]+1} ]]; do
			lowest=$((lowest + 1))
		done
		above=$((count - below))
		nropen=$(</proc/sys/fs/nr_open)
		twice "$soft" 1024
		suggest=$TW
		((suggest < 2 * count)) && suggest=$((2 * count))
		suggest=$(((suggest + 1023) / 1024 * 1024))
		((suggest > nropen)) && suggest=$nropen
		local note="$count open, lowest free number $lowest"
		((above > 0)) && note+=", $above at or above the soft limit"
		if [[ $hard == unlimited ]] || ((suggest <= hard)); then
			fix="prlimit --pid $pid --nofile=$suggest:$hard"
		else
			fix="prlimit --pid $pid --nofile=$suggest:$suggest"
		fi
		# shellcheck disable=SC2059 # the format is ours
		fix+="; $(printf "$persist" "$suggest" "$suggest")"
		add_check nofile_soft process "descriptors (soft RLIMIT_NOFILE)" "$below" "$soft" count "$note" "$fix"
		# shellcheck disable=SC2059
		add_check nofile_hard process "descriptors (hard RLIMIT_NOFILE)" "$count" "$hard" count "fs.nr_open $nropen" \
			"prlimit --pid $pid --nofile=$suggest:$suggest (as root); $(printf "$persist" "$suggest" "$suggest")"
	fi

	mapmax=$(</proc/sys/vm/max_map_count)
	if readable "/proc/$pid/maps" && maps=$(wc -l <"/proc/$pid/maps" 2>/dev/null); then
		twice "$mapmax" 262144
		add_check maps process "memory mappings" "$maps" "$mapmax" count "vm.max_map_count" \
			"sysctl -w vm.max_map_count=$TW; persist: vm.max_map_count in /etc/sysctl.d/"
	else
		add_blind maps "memory mappings" "/proc/$pid/maps"
	fi

	threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
	tmax=$(</proc/sys/kernel/threads-max)
	pidmax=$(</proc/sys/kernel/pid_max)
	twice "$tmax"
	add_check threads_max process "threads (kernel.threads-max)" "$threads" "$tmax" count "" \
		"sysctl -w kernel.threads-max=$TW"
	add_check pid_max process "threads (kernel.pid_max)" "$threads" "$pidmax" count "" \
		"sysctl -w kernel.pid_max=4194304"
	if readable "/proc/$pid/cgroup"; then
		cgroup_check cgroup_pids "cgroup tasks (pids.max)" pids "$pid" count
		cgroup_check cgroup_memory "cgroup memory" memory "$pid" bytes
	else
		add_blind cgroup_pids "cgroup tasks (pids.max)" "/proc/$pid/cgroup"
		add_blind cgroup_memory "cgroup memory" "/proc/$pid/cgroup"
	fi

	# (A kernel thread has no VmSize: nothing mapped.)
	vmsize='' vmlck=''
	if readable "/proc/$pid/status"; then
		vmsize=$(awk '/^VmSize:/ { print $2 }' "/proc/$pid/status")
		vmlck=$(awk '/^VmLck:/ { print $2 }' "/proc/$pid/status")
		vmsize=$((${vmsize:-0} * 1024)) vmlck=$((${vmlck:-0} * 1024))
	fi
	read -r as_soft as_hard < <(limits_of "$pid" "Max address space")
	read -r ml_soft ml_hard < <(limits_of "$pid" "Max locked memory")
	add_check rlimit_as process "address space (RLIMIT_AS)" "$vmsize" "$as_soft" bytes "hard ${as_hard:-?}" \
		"prlimit --pid $pid --as=unlimited:$as_hard; persist: LimitAS= in the unit"
	twice "$ml_soft" 67108864
	add_check rlimit_memlock process "locked memory (RLIMIT_MEMLOCK)" "$vmlck" "$ml_soft" bytes "hard ${ml_hard:-?}" \
		"prlimit --pid $pid --memlock=$TW:$ml_hard; persist: LimitMEMLOCK= in the unit"

	doctor_epoll "$pid"
	doctor_fdguard "$pid"
}

# use_pct VALUE LIMIT: sets UP to VALUE in percent of LIMIT; fails when either
# is not a (finite, non-zero) number.
UP=''
use_pct() {
	[[ $1 =~ ^[0-9]{1,18}$ && $2 =~ ^[0-9]{1,18}$ ]] && (($2 > 0)) || return 1
	# (Both below 10^18; the product would overflow above 10^16.)
	if ((${#1} > 16)); then
		UP=$(($1 / ($2 / 100 > 0 ? $2 / 100 : 1)))
	else
		UP=$(($1 * 100 / $2))
	fi
}

# show_value VALUE UNIT
show_value() {
	if is_unlimited "$1"; then
		echo unlimited
	elif [[ $2 == bytes ]]; then
		human "$1"
	else
		printf '%s\n' "$1"
	fi
}

cmd_doctor() {
	local arg json='' pid='' i worst=OK use limit note nfail=0 nwarn=0 nok=0 nblind=0 prog='' uid=''
	local q_id q_label q_note q_fix q_value q_limit e_prog
	tools_init
	while (($# > 0)); do
		arg=$1
		shift
		case $arg in
		-h | --help)
			usage_doctor
			exit 0
			;;
		--json) json=1 ;;
		-*) die_usage "unknown option: $arg" ;;
		*)
			[[ -z $pid ]] || die_usage "more than one PID given"
			need_pid "$arg"
			pid=$PID
			;;
		esac
	done
	if [[ -n $pid ]]; then
		prog=$(proc_name "$pid")
		uid=$(proc_uid "$pid")
		if ! proc_alive "$pid"; then
			die "process $pid ($prog) has exited (zombie)"
		fi
	fi
	SR_BIN=$(find_bin statsread) || exit 1
	doctor_host
	if [[ -n $pid ]]; then
		doctor_process "$pid"
		[[ -d /proc/$pid ]] || die "process $pid exited while being inspected"
	fi
	# What could not be inspected is never OK: FAIL, then WARN, then N/A.
	for ((i = 0; i < ${#CK_ID[@]}; i++)); do
		case ${CK_STATUS[i]} in
		FAIL) nfail=$((nfail + 1)) worst=FAIL ;;
		WARN) nwarn=$((nwarn + 1)) && [[ $worst != FAIL ]] && worst=WARN ;;
		*)
			if ((CK_BLIND[i])); then
				nblind=$((nblind + 1))
				[[ $worst == OK ]] && worst=N/A
			else
				nok=$((nok + 1))
			fi
			;;
		esac
	done

	if [[ -n $json ]]; then
		printf '{"status":%s,"host":{"name":%s,"kernel":%s}' "$(json_str "$worst")" \
			"$(json_str "$(uname -n)")" "$(json_str "$(uname -r)")"
		if [[ -n $pid ]]; then
			printf ',"process":{"pid":%s,"prog":%s,"uid":%s}' "$pid" "$(json_str "$prog")" "$(json_num "$uid")"
		else
			printf ',"process":null'
		fi
		printf ',"checks":['
		for ((i = 0; i < ${#CK_ID[@]}; i++)); do
			((i > 0)) && printf ','
			use=null
			use_pct "${CK_VALUE[i]}" "${CK_LIMIT[i]}" && use=$UP
			json_q q_id "${CK_ID[i]}"
			json_q q_label "${CK_LABEL[i]}"
			json_q q_note "${CK_NOTE[i]}"
			json_q q_fix "${CK_FIX[i]}"
			q_value=null q_limit=null
			[[ ${CK_VALUE[i]} =~ ^[0-9]+$ ]] && ((${#CK_VALUE[i]} < 19)) && q_value=${CK_VALUE[i]}
			[[ ${CK_LIMIT[i]} =~ ^[0-9]+$ ]] && ((${#CK_LIMIT[i]} < 19)) && q_limit=${CK_LIMIT[i]}
			printf '{"id":%s,"scope":"%s","check":%s,"value":%s,"limit":%s,"unit":"%s","use_pct":%s,"status":"%s","inspected":%s,"note":%s,"fix":%s}' \
				"$q_id" "${CK_SCOPE[i]}" "$q_label" "$q_value" "$q_limit" "${CK_UNIT[i]}" "$use" \
				"${CK_STATUS[i]}" "$( ((CK_BLIND[i])) && echo false || echo true)" "$q_note" "$q_fix"
		done
		printf '],"not_inspected":%s}\n' "$nblind"
	else
		printf 'fdguard doctor: host %s (Linux %s)' "$(uname -n)" "$(uname -r)"
		esc e_prog "$prog"
		[[ -n $pid ]] && printf ', process %s (%s, uid %s)' "$pid" "$e_prog" "$uid"
		printf '\n\n'
		{
			row STATUS SCOPE CHECK USED LIMIT USE NOTE
			for ((i = 0; i < ${#CK_ID[@]}; i++)); do
				use=-
				use_pct "${CK_VALUE[i]}" "${CK_LIMIT[i]}" && use=$UP%
				limit=${CK_LIMIT[i]:--}
				[[ $limit != - ]] && limit=$(show_value "$limit" "${CK_UNIT[i]}")
				note=${CK_NOTE[i]}
				[[ -n ${CK_FIX[i]} ]] && note+="${note:+; }fix: ${CK_FIX[i]}"
				row "${CK_STATUS[i]}" "${CK_SCOPE[i]}" "${CK_LABEL[i]}" \
					"$(show_value "${CK_VALUE[i]}" "${CK_UNIT[i]}")" "$limit" "$use" "$note"
			done
		} | print_table
		printf '\n%s: %d FAIL, %d WARN, %d not inspected, %d OK or N/A\n' "$worst" "$nfail" "$nwarn" "$nblind" "$nok"
		if ((nblind > 0 && EUID == 0)); then
			printf 'process %s could not be fully inspected: it is not dumpable, or this root lacks CAP_SYS_PTRACE\n' "$pid"
		elif ((nblind > 0)); then
			printf 'process %s could not be fully inspected: run as uid %s or as root\n' "$pid" "${uid:-?}"
		fi
	fi
	[[ $worst == OK ]]
	exit $?
}

