# fdguard ipc: System V IPC objects left behind by dead processes, and
# their safe removal.
# shellcheck shell=bash source-path=SCRIPTDIR

# shellcheck source=common.bash
. "${BASH_SOURCE[0]%/*}/common.bash"

usage_ipc() {
	cat <<'EOF'
Usage: fdguard ipc [--reap] [--min-age SECS] [--pid PID] [--key KEY] [--all] [--json]

Lists the System V shared memory segments, semaphore sets and message queues
of the calling user (owner or creator uid) that were left behind by a process
that is gone (kill -9, a crash): they fill kernel.shmmni / kernel.sem /
kernel.msgmni until shmget or semget fail with "No space left on device".

  orphan   shared memory: creator (cpid) gone and nattch 0;
           semaphores, queues: creator recorded by fdguard and gone;
           and, for every kind, no live last user (lpid; the pid of the last
           semop on each semaphore and nobody waiting; lspid and lrpid)
  unknown  semaphores and queues whose creator was not recorded (created
           without the shim, or a malformed registry entry); never reaped
  in use   everything else; listed only with --all. A message queue is in
           use while a live task waits on it in msgrcv or msgsnd
           (/proc/PID/task/TID/syscall), or may wait: a task that cannot
           be looked at (another user's, without CAP_SYS_PTRACE) and that
           the queue's mode lets read or write it

A pid counts as gone when it does not exist, is a zombie, or now belongs to
another process: the one recorded by fdguard had another start time, or the
process started after the kernel recorded the pid (pid reused).

Creators of semaphores and queues come from the registry the shim writes,
/tmp/fdguard-ipc-UID/{shm,sem,msg}.ID (FDGUARD_IPC_REGISTRY overrides): it
is used only if it is a directory owned by you, not accessible to others
(0700), and only its regular files owned by you (no symbolic links), for the
object with the same id and key, not older than the object's last change.
An entry is exactly four lines, "pid N", "start N", "key N", "prog NAME"
(the name escaped, \xHH); anything else is reported as malformed and never
used: neither trusted nor deleted.

Options:
  --reap          remove what is listed as orphan (ipcrm -m/-s/-q ID), each
                  one re-checked right before (same id, key, owner and ctime,
                  still no attach, no live creator or user); also deletes
                  registry entries of objects that no longer exist
  --min-age SECS  only objects last changed (ctime, or the registry entry)
                  at least SECS seconds ago
  --pid PID       only objects created by PID
  --key KEY       only objects with this key (0x hex or decimal)
  --all           list objects in use as well
  --json          one JSON object
  -h, --help      show this help

Objects of other users are never considered, root's included: run as the
owner (runuser -u USER -- fdguard ipc --reap) to reap theirs. Run as root
to see every waiter: a task that uses a queue only by privilege
(CAP_IPC_OWNER, not its mode bits) is seen only by a caller that can read
its /proc/PID/task/TID/syscall.

Exit status: 0 nothing left behind (or everything listed was removed),
1 orphaned or unknown objects remain, or a removal failed, 2 usage error.
EOF
}

REG_DIR='' REG_OK='' REG_WHY=''

# reg_check: is the registry directory trustworthy (ours, private, no link)?
reg_check() {
	local owner mode
	[[ -n $REG_OK ]] && return 0
	REG_DIR=${FDGUARD_IPC_REGISTRY:-/tmp/fdguard-ipc-$EUID}
	REG_OK=0
	if [[ ! -e $REG_DIR && ! -L $REG_DIR ]]; then
		REG_WHY="$REG_DIR does not exist (no process created an object under the shim)"
	elif [[ -L $REG_DIR || ! -d $REG_DIR ]]; then
		REG_WHY="$REG_DIR is not a directory (or is a symbolic link): ignored"
	else
		read -r owner mode < <(stat -c '%u %a' -- "$REG_DIR")
		if [[ $owner != "$EUID" ]] || ((8#$mode & 8#077)); then
			REG_WHY="$REG_DIR is not a private directory of uid $EUID (owner $owner, mode $mode): ignored"
		else
			REG_OK=1
		fi
	fi
}

R_PID='' R_START='' R_KEY='' R_PROG='' R_MTIME='' R_INO='' R_PATH='' R_WHY=''

REG_ENTRY_RE=$'^pid ([1-9][0-9]{0,9})\nstart (0|[1-9][0-9]{0,19})\nkey (0|-?[1-9][0-9]{0,9})\nprog ([ -~]*)\n$'

# reg_entry KIND ID: reads the registry entry of an object into R_*. Status 0:
# a valid entry; 1: none to trust (no entry, not ours, a link); 2: malformed
# (R_WHY says how), never used for anything. The shim writes exactly four
# lines, in this order:
#   pid N / start N / key N / prog ESCAPED
# numbers in decimal, the program name with every byte outside 0x20..0x7e and
# the backslash as \xHH: a name cannot add a line (a forged "pid 1") to it.
reg_entry() {
	local f owner links size content
	R_PID='' R_START='' R_KEY='' R_PROG='' R_MTIME='' R_INO='' R_PATH='' R_WHY=''
	reg_check
	((REG_OK)) || return 1
	f=$REG_DIR/$1.$2
	[[ -f $f && ! -L $f ]] || return 1
	read -r owner links R_MTIME R_INO size < <(stat -c '%u %h %Y %i %s' -- "$f") || return 1
	[[ $owner == "$EUID" && $links == 1 ]] || return 1
	# (The directory is private and ours: nobody else can swap the file.)
	if ((size > 1024)); then
		R_WHY="larger than 1024 bytes"
		return 2
	fi
	content=''
	{ IFS= read -r -d '' content <"$f"; } 2>/dev/null
	# The whole entry against one pattern: these four fields, once each, in
	# this order, and nothing else (C locale: [ -~] is printable ASCII).
	if ((${#content} != size)); then
		R_WHY="holds a NUL byte (or changed while read)"
	elif [[ ! $content =~ $REG_ENTRY_RE ]]; then
		R_WHY="not the four lines pid N, start N, key N, prog NAME"
	elif ((BASH_REMATCH[3] < -2147483648 || BASH_REMATCH[3] > 2147483647)); then
		R_WHY="key out of range"
	elif ! is_escaped "${BASH_REMATCH[4]}"; then
		R_WHY="program name not escaped"
	else
		R_PID=${BASH_REMATCH[1]} R_START=${BASH_REMATCH[2]} R_KEY=${BASH_REMATCH[3]}
		unesc R_PROG "${BASH_REMATCH[4]}"
		R_PATH=$f
		return 0
	fi
	return 2
}

# key_hex KEY: a key from /proc/sysvipc (signed decimal) as ipcs shows it.
key_hex() {
	printf '0x%08x\n' $(($1 & 0xffffffff))
}

# age_text SECS: 45s, 12m, 3h, 2d.
age_text() {
	local s=$1
	if ((s < 120)); then
		echo "${s}s"
	elif ((s < 7200)); then
		echo "$((s / 60))m"
	elif ((s < 172800)); then
		echo "$((s / 3600))h"
	else
		echo "$((s / 86400))d"
	fi
}

# creator_exact PID START: sets PS to the state of a creator recorded with
# its start time.
creator_exact() {
	local -a PF
	if ! proc_fields "$1" || [[ ${PF[0]} == [ZX] ]]; then
		PS=dead
	elif [[ ${PF[19]} == "$2" ]]; then
		PS=alive
	else
		PS=reused
	fi
}

# ipc_last_user PID REF: adds PID to the caller's users array if it is alive
# and may have done the last operation at REF. A pid equal to a creator
# proven gone is that creator.
ipc_last_user() {
	[[ $1 == 0 ]] && return
	# The creator itself: judged as the creator (gone, or alive: in use).
	if [[ $1 == "$C_CREATOR" && -n $C_CSTATE && $C_CSTATE != none ]]; then
		return
	fi
	pid_state "$1" "$2"
	[[ $PS == alive ]] && users+=("last user $1 ($(proc_name "$1")) alive")
}

# --- who waits on a message queue ---------------------------------------------

# The kernel counts no waiters of a message queue: a process blocked in msgrcv
# (or in msgsnd on a full queue) changes neither lspid nor lrpid until a
# message moves. But a blocked task shows its system call in
# /proc/PID/task/TID/syscall: its number, then its arguments, the first of
# which is the queue id. Tasks whose file cannot be read (other users', for a
# caller without CAP_SYS_PTRACE) are kept with their credentials: a queue
# whose mode lets one of them use it may be waited on.
MW_SCANNED='' MW_NRS='' MW_BLIND=()
declare -A MW_WAIT=()

# mw_nrs: the numbers of msgsnd and msgrcv here (x86_64 also runs i386
# programs: their direct calls, 400 and 401, and ipc(), 117, whose first
# argument is MSGSND 11 or MSGRCV 12 and second the queue id). Empty when the
# architecture is not known.
mw_nrs() {
	case $(uname -m) in
	x86_64) MW_NRS="69 70 400 401 117" ;;
	aarch64 | riscv64 | loongarch64) MW_NRS="189 188" ;;
	*) MW_NRS='' ;;
	esac
}

# mw_scan: every task blocked on a queue (MW_WAIT: queue id -> who) and the
# credentials of the tasks that cannot be looked at (MW_BLIND: "EUID EGID
# GROUPS..."). Once per listing; a re-check before a removal scans again.
mw_scan() {
	local t line nr a1 a2 id pid what name
	local -a blind=() w
	local -A creds=()
	[[ -n $MW_SCANNED ]] && return
	MW_SCANNED=1 MW_WAIT=() MW_BLIND=()
	mw_nrs
	[[ -n $MW_NRS ]] || return
	for t in /proc/[0-9]*/task/[0-9]*; do
		if ! { read -r nr a1 a2 _ <"$t/syscall"; } 2>/dev/null; then
			[[ -e $t/syscall ]] && blind+=("$t")
			continue
		fi
		id='' what=msgrcv
		case " $MW_NRS " in
		*" $nr "*) ;;
		*) continue ;;
		esac
		case $nr in
		69 | 189 | 400) what=msgsnd id=$((a1)) ;;
		117)
			case $((a1 & 0xffff)) in
			11) what=msgsnd id=$((a2)) ;;
			12) id=$((a2)) ;;
			*) continue ;;
			esac
			;;
		*) id=$((a1)) ;;
		esac
		pid=${t#/proc/}
		pid=${pid%%/*}
		name=$(proc_name "$pid")
		MW_WAIT[$id]+="${MW_WAIT[$id]:+, }$pid ($name) in $what"
	done
	((${#blind[@]} > 0)) || return
	while IFS= read -r line; do
		t=${line%/status:*}
		line=${line#*/status:}
		read -r -a w <<<"${line#*:}"
		case $line in
		Uid:*) creds[$t]="${w[1]}" ;;
		Gid:*) creds[$t]+=" ${w[1]}" ;;
		Groups:*) creds[$t]+=" ${w[*]}" ;;
		esac
	done < <(printf '%s/status\n' "${blind[@]}" | xargs -d '\n' grep -H -E '^(Uid|Gid|Groups):' 2>/dev/null)
	for t in "${blind[@]}"; do
		[[ -n ${creds[$t]:-} ]] && MW_BLIND+=("${creds[$t]}")
	done
}

# mw_could_use CREDS MODE UID GID CUID CGID: a task with CREDS ("EUID EGID
# GROUPS...") may read or write the queue, by its mode bits (the kernel's
# ipcperms; a privileged task, CAP_IPC_OWNER, is not counted: see usage_ipc).
mw_could_use() {
	local -a c
	local bits=$((8#$2 & 8#777)) g
	read -r -a c <<<"$1"
	if [[ ${c[0]} == "$3" || ${c[0]} == "$5" ]]; then
		bits=$((bits >> 6))
	else
		for g in "${c[@]:1}"; do
			if [[ $g == "$4" || $g == "$6" ]]; then
				bits=$((bits >> 3))
				break
			fi
		done
	fi
	((bits & 6))
}

# mw_users ID MODE UID GID CUID CGID: adds to the caller's users array the
# tasks waiting on queue ID, and to its maybe array the tasks that cannot be
# looked at but could wait on it.
mw_users() {
	local c n=0
	mw_scan
	if [[ -z $MW_NRS ]]; then
		maybe+=("waiters cannot be checked on $(uname -m)")
		return
	fi
	[[ -n ${MW_WAIT[$1]:-} ]] && users+=("waiting: ${MW_WAIT[$1]}")
	for c in "${MW_BLIND[@]}"; do
		mw_could_use "$c" "${@:2}" && n=$((n + 1))
	done
	((n == 0)) || maybe+=("$n tasks that may use it cannot be inspected$( ((EUID == 0)) || echo ' (run as root)')")
}

C_ID='' C_KEY='' C_UID='' C_CUID='' C_CTIME='' C_CREATOR='' C_CPROG='' C_CSTATE='' C_STATE='' C_WHY='' C_AGE=''
C_REG='' C_REGINO='' C_SIZE='' C_USERS=''

# ipc_classify KIND FIELDS...: classifies one object from its line of
# /proc/sysvipc/KIND (see usage_ipc), into C_*.
ipc_classify() {
	local kind=$1 now exact='' ref p st last nsem pid rc
	shift
	local -a f=("$@") users=() maybe=()
	C_ID=${f[1]} C_KEY=${f[0]} C_CREATOR='' C_CPROG='' C_CSTATE='' C_REG='' C_REGINO='' C_WHY=''
	case $kind in
	shm)
		C_UID=${f[7]} C_CUID=${f[9]} C_CTIME=${f[13]}
		C_SIZE="${f[3]} bytes, nattch ${f[6]}"
		C_CREATOR=${f[4]}
		;;
	sem)
		C_UID=${f[4]} C_CUID=${f[6]} C_CTIME=${f[9]}
		C_SIZE="${f[3]} semaphores"
		;;
	msg)
		C_UID=${f[7]} C_CUID=${f[9]} C_CTIME=${f[13]}
		C_SIZE="qnum ${f[4]}, ${f[3]} bytes"
		;;
	esac
	ref=$C_CTIME
	# The creator: recorded by the shim (exact, with its start time), or for
	# shared memory the kernel's cpid.
	reg_entry "$kind" "$C_ID"
	rc=$?
	if ((rc == 2)); then
		C_WHY="registry entry $REG_DIR/$kind.$C_ID is malformed ($R_WHY): ignored"
	elif ((rc == 0)); then
		if [[ $R_KEY != "$C_KEY" ]]; then
			C_WHY="registry entry is for another object (key differs)"
		elif ((R_MTIME + 2 < C_CTIME)); then
			C_WHY="registry entry older than the object's last change (id reused?)"
		elif [[ $kind == shm && $R_PID != "$C_CREATOR" ]]; then
			C_WHY="registry entry names another creator than the kernel"
		else
			C_CREATOR=$R_PID C_CPROG=$R_PROG C_REG=$R_PATH C_REGINO=$R_INO
			((R_MTIME > ref)) && ref=$R_MTIME
			creator_exact "$R_PID" "$R_START"
			C_CSTATE=$PS
			exact=1
		fi
	fi
	if [[ -z $exact ]]; then
		if [[ $kind == shm && $C_CREATOR != 0 ]]; then
			pid_state "$C_CREATOR" "$C_CTIME"
			C_CSTATE=$PS
		elif [[ $kind == shm ]]; then
			C_CREATOR='' C_WHY="creator not visible in this pid namespace"
		else
			C_CREATOR=''
			[[ -n $C_WHY ]] || C_WHY="creator not recorded (created without the shim)"
		fi
	fi
	if [[ -n $C_CREATOR && -z $C_CPROG ]]; then
		[[ $C_CSTATE == alive ]] && C_CPROG=$(proc_name "$C_CREATOR")
	fi
	now=$(now_epoch)
	C_AGE=$((now - ref))
	((C_AGE < 0)) && C_AGE=0

	# Live users.
	case $kind in
	shm)
		((f[6] > 0)) && users+=("attached by ${f[6]}")
		last=${f[11]}
		((f[12] > last)) && last=${f[12]}
		ipc_last_user "${f[5]}" "$last"
		;;
	sem)
		last=${f[8]}
		((f[9] > last)) && last=${f[9]}
		nsem=0
		while read -r _ _ p st pid; do
			[[ $p =~ ^[0-9]+$ ]] || continue
			nsem=$((nsem + 1))
			((p + st > 0)) && users+=("$((p + st)) waiting on semaphore $((nsem - 1))")
			ipc_last_user "$pid" "$last"
		done < <(ipcs -s -i "$C_ID" 2>/dev/null | awk '/^semnum/ { on = 1; next } on && NF == 5')
		;;
	msg)
		ipc_last_user "${f[5]}" "${f[11]}"
		ipc_last_user "${f[6]}" "${f[12]}"
		mw_users "$C_ID" "${f[2]}" "${f[7]}" "${f[8]}" "${f[9]}" "${f[10]}"
		;;
	esac
	# Users seen are users; users that may exist unseen only keep an object
	# whose creator is gone from being an orphan.
	C_USERS=''
	for p in "${users[@]}" "${maybe[@]}"; do
		C_USERS+="${C_USERS:+, }$p"
	done
	if ((${#users[@]} > 0)); then
		C_STATE=in-use
	elif [[ -z $C_CREATOR || -z $C_CSTATE ]]; then
		C_STATE=unknown
	elif [[ $C_CSTATE == alive ]]; then
		C_STATE=in-use C_USERS="creator alive${C_USERS:+, }$C_USERS"
	elif ((${#maybe[@]} > 0)); then
		C_STATE=in-use
	else
		C_STATE=orphan
	fi
}

# The scan's results, one index per object shown.
I_KIND=() I_ID=() I_KEY=() I_UID=() I_CUID=() I_CTIME=() I_CREATOR=() I_CPROG=() I_CSTATE=()
I_STATE=() I_NOTE=() I_AGE=() I_REG=() I_REGINO=()
IPC_N_ORPHAN=0 IPC_N_UNKNOWN=0 IPC_N_INUSE=0 IPC_N_OTHER=0 IPC_N_FILTERED=0
REG_STALE=() REG_BAD=()
# Filters (empty: none) and whether objects in use are kept.
IPC_F_PID='' IPC_F_KEY='' IPC_F_AGE='' IPC_F_ALL=''

# ipc_scan: every object of the caller, classified, filtered.
ipc_scan() {
	local kind line name ino owner entry now uids rc
	local -a fields entries=()
	local -A exists=()
	reg_check
	# Registry entries are listed before the objects are read: an entry
	# whose object is missing afterwards belongs to an object that is gone.
	if ((REG_OK)); then
		for entry in "$REG_DIR"/shm.* "$REG_DIR"/sem.* "$REG_DIR"/msg.*; do
			name=${entry##*/}
			[[ $name =~ ^(shm|sem|msg)\.[0-9]+$ && -f $entry && ! -L $entry ]] || continue
			read -r ino owner < <(stat -c '%i %u' -- "$entry") || continue
			[[ $owner == "$EUID" ]] && entries+=("$name $ino")
		done
	fi
	for kind in shm sem msg; do
		[[ -r /proc/sysvipc/$kind ]] || continue
		while read -r -a fields; do
			[[ ${fields[0]} =~ ^-?[0-9]+$ ]] || continue
			exists[$kind.${fields[1]}]=1
			# Owner and creator uid: fields 5 and 7 of sem, 8 and 10 of the others.
			if [[ $kind == sem ]]; then
				uids="${fields[4]} ${fields[6]}"
			else
				uids="${fields[7]} ${fields[9]}"
			fi
			if [[ " $uids " != *" $EUID "* ]]; then
				IPC_N_OTHER=$((IPC_N_OTHER + 1))
				continue
			fi
			ipc_classify "$kind" "${fields[@]}"
			if [[ -n $IPC_F_PID && $C_CREATOR != "$IPC_F_PID" ]] ||
				[[ -n $IPC_F_KEY && $((C_KEY & 0xffffffff)) != "$IPC_F_KEY" ]] ||
				[[ -n $IPC_F_AGE && $C_AGE -lt $IPC_F_AGE ]]; then
				IPC_N_FILTERED=$((IPC_N_FILTERED + 1))
				continue
			fi
			case $C_STATE in
			orphan) IPC_N_ORPHAN=$((IPC_N_ORPHAN + 1)) ;;
			unknown) IPC_N_UNKNOWN=$((IPC_N_UNKNOWN + 1)) ;;
			*)
				IPC_N_INUSE=$((IPC_N_INUSE + 1))
				[[ -n $IPC_F_ALL ]] || continue
				;;
			esac
			local note=$C_SIZE
			[[ -n $C_USERS ]] && note+="; $C_USERS"
			[[ -n $C_WHY ]] && note+="; $C_WHY"
			I_KIND+=("$kind") I_ID+=("$C_ID") I_KEY+=("$C_KEY") I_UID+=("$C_UID") I_CUID+=("$C_CUID")
			I_CTIME+=("$C_CTIME") I_CREATOR+=("$C_CREATOR") I_CPROG+=("$C_CPROG") I_CSTATE+=("$C_CSTATE")
			I_STATE+=("$C_STATE") I_NOTE+=("$note") I_AGE+=("$C_AGE") I_REG+=("$C_REG") I_REGINO+=("$C_REGINO")
		done < <(tail -n +2 "/proc/sysvipc/$kind")
	done
	# Entries of objects that are gone, within the filters. A malformed one
	# is reported and left alone.
	REG_STALE=() REG_BAD=()
	now=$(now_epoch)
	for entry in "${entries[@]}"; do
		name=${entry%% *}
		[[ -z ${exists[$name]:-} ]] || continue
		reg_entry "${name%.*}" "${name#*.}"
		rc=$?
		if ((rc == 2)); then
			REG_BAD+=("$name: $R_WHY")
			continue
		fi
		((rc == 0)) || continue
		if [[ -n $IPC_F_PID$IPC_F_KEY$IPC_F_AGE ]]; then
			[[ -n $IPC_F_PID && $R_PID != "$IPC_F_PID" ]] && continue
			[[ -n $IPC_F_KEY && $((R_KEY & 0xffffffff)) != "$IPC_F_KEY" ]] && continue
			[[ -n $IPC_F_AGE ]] && ((now - R_MTIME < IPC_F_AGE)) && continue
		fi
		REG_STALE+=("$entry")
	done
}

# ipc_reap_one INDEX: re-checks object INDEX and removes it. Prints one line;
# fails when the object is still there.
ipc_reap_one() {
	local i=$1 kind=${I_KIND[$1]} id=${I_ID[$1]} line what flag err
	local -a fields
	what="$kind $id (key $(key_hex "${I_KEY[i]}"), creator ${I_CREATOR[i]} ${I_CPROG[i]:-?} ${I_CSTATE[i]})"
	line=$(awk -v id="$id" 'NR > 1 && $2 == id' "/proc/sysvipc/$kind")
	if [[ -z $line ]]; then
		echo "gone:    $what: removed by someone else meanwhile"
		return 0
	fi
	read -r -a fields <<<"$line"
	MW_SCANNED='' # who waits now, not when the list was made
	ipc_classify "$kind" "${fields[@]}"
	if [[ $C_KEY != "${I_KEY[i]}" || $C_UID != "${I_UID[i]}" || $C_CUID != "${I_CUID[i]}" ||
		$C_CTIME != "${I_CTIME[i]}" ]]; then
		echo "kept:    $what: changed since it was listed (new object with this id?)"
		return 1
	fi
	if [[ $C_STATE != orphan ]]; then
		echo "kept:    $what: no longer an orphan (${C_USERS:-$C_WHY})"
		return 1
	fi
	case $kind in
	shm) flag=-m ;;
	sem) flag=-s ;;
	msg) flag=-q ;;
	esac
	if ! err=$(ipcrm "$flag" "$id" 2>&1); then
		echo "failed:  $what: ${err:-ipcrm failed}"
		return 1
	fi
	echo "removed: $what"
	if [[ -n $C_REG && $(stat -c %i -- "$C_REG" 2>/dev/null) == "$C_REGINO" ]]; then
		rm -f -- "$C_REG"
	fi
}

cmd_ipc() {
	local arg reap='' json='' i n rc=0 creator owner entry name
	local -a results=() lines=()
	tools_init
	while (($# > 0)); do
		arg=$1
		shift
		case $arg in
		-h | --help)
			usage_ipc
			exit 0
			;;
		--reap) reap=1 ;;
		--all) IPC_F_ALL=1 ;;
		--json) json=1 ;;
		--min-age | --pid | --key)
			(($# > 0)) || die_usage "option $arg requires a value"
			set -- "$arg=$1" "${@:2}"
			continue
			;;
		--min-age=*)
			[[ -z $IPC_F_AGE ]] || die_usage "--min-age given twice"
			check_uint --min-age "${arg#*=}" 0 315360000
			IPC_F_AGE=$((10#${arg#*=}))
			;;
		--pid=*)
			[[ -z $IPC_F_PID ]] || die_usage "--pid given twice (one creator per run)"
			check_uint --pid "${arg#*=}" 1 4194304
			IPC_F_PID=$((10#${arg#*=}))
			;;
		--key=*)
			[[ -z $IPC_F_KEY ]] || die_usage "--key given twice (one key per run)"
			arg=${arg#*=}
			if [[ $arg =~ ^0[xX][0-9a-fA-F]{1,8}$ ]]; then
				IPC_F_KEY=$((16#${arg:2}))
			elif [[ $arg =~ ^-?[0-9]{1,10}$ ]] && ((arg >= -2147483648 && arg <= 4294967295)); then
				IPC_F_KEY=$((arg & 0xffffffff))
			else
				die_usage "--key: invalid value '$arg' (expected 0x hex or decimal)"
			fi
			;;
		*) die_usage "unknown argument: $arg" ;;
		esac
	done
	ipc_scan
	n=${#I_KIND[@]}

	if [[ -n $reap ]]; then
		for ((i = 0; i < n; i++)); do
			if [[ ${I_STATE[i]} != orphan ]]; then
				results+=("")
				continue
			fi
			if line=$(ipc_reap_one "$i"); then
				:
			else
				rc=1
			fi
			lines+=("$line")
			results+=("${line%%:*}")
		done
		for entry in "${REG_STALE[@]}"; do
			name=${entry%% *}
			if [[ $(stat -c %i -- "$REG_DIR/$name" 2>/dev/null) == "${entry#* }" ]]; then
				rm -f -- "${REG_DIR:?}/$name"
			fi
		done
	fi
	((IPC_N_UNKNOWN > 0)) && rc=1
	[[ -z $reap ]] && ((IPC_N_ORPHAN > 0)) && rc=1

	if [[ -n $json ]]; then
		printf '{"uid":%s,"registry":{"path":%s,"trusted":%s,"why":%s,"stale_entries":%s,"malformed_entries":[' "$EUID" \
			"$(json_str "$REG_DIR")" "$( ((REG_OK)) && echo true || echo false)" \
			"$(json_str "${REG_WHY:-}")" "${#REG_STALE[@]}"
		for ((i = 0; i < ${#REG_BAD[@]}; i++)); do
			((i > 0)) && printf ','
			json_str "${REG_BAD[i]}"
		done
		printf ']'
		printf '},"orphans":%s,"unknown":%s,"in_use":%s,"other_users":%s,"filtered":%s,"objects":[' \
			"$IPC_N_ORPHAN" "$IPC_N_UNKNOWN" "$IPC_N_INUSE" "$IPC_N_OTHER" "$IPC_N_FILTERED"
		for ((i = 0; i < n; i++)); do
			((i > 0)) && printf ','
			printf '{"kind":"%s","id":%s,"key":"%s","uid":%s,"creator_pid":%s,"creator_prog":%s,"creator":%s,"age":%s,"state":%s,"note":%s' \
				"${I_KIND[i]}" "${I_ID[i]}" "$(key_hex "${I_KEY[i]}")" "${I_UID[i]}" "$(json_num "${I_CREATOR[i]}")" \
				"$(json_str "${I_CPROG[i]}")" "$(json_str "${I_CSTATE[i]:-unknown}")" "${I_AGE[i]}" \
				"$(json_str "${I_STATE[i]}")" "$(json_str "${I_NOTE[i]}")"
			[[ -n $reap ]] && printf ',"reap":%s' "$(json_str "${results[i]:-}")"
			printf '}'
		done
		printf ']}\n'
		exit "$rc"
	fi

	if ((REG_OK == 0)) && [[ $REG_WHY != *'does not exist'* ]]; then
		esc line "$REG_WHY"
		printf 'fdguard ipc: registry %s\n' "$line" >&2
	fi
	if ((n > 0)); then
		{
			row KIND ID KEY OWNER CREATOR AGE STATE NOTE
			for ((i = 0; i < n; i++)); do
				if [[ -n ${I_CREATOR[i]} ]]; then
					creator="${I_CREATOR[i]} ${I_CPROG[i]:-?} (${I_CSTATE[i]})"
				else
					creator=unknown
				fi
				owner=$(user_name "${I_UID[i]}")
				row "${I_KIND[i]}" "${I_ID[i]}" "$(key_hex "${I_KEY[i]}")" "$owner" "$creator" \
					"$(age_text "${I_AGE[i]}")" "${I_STATE[i]}" "${I_NOTE[i]}"
			done
		} | print_table
		echo
	fi
	for line in "${lines[@]}"; do
		esc line "$line"
		printf '%s\n' "$line"
	done
	((${#lines[@]} > 0)) && echo
	local summary
	summary="$IPC_N_ORPHAN orphaned"
	if ((IPC_N_ORPHAN > 0)) && [[ -z $reap ]]; then
		summary+=" (fdguard ipc --reap removes them)"
	elif [[ -n $reap ]]; then
		n=0
		for line in "${results[@]}"; do
			[[ $line == removed ]] && n=$((n + 1))
		done
		summary+=" ($n removed)"
	fi
	summary+=", $IPC_N_UNKNOWN with creator unknown (never reaped), $IPC_N_INUSE in use"
	[[ -z $IPC_F_ALL ]] && ((IPC_N_INUSE > 0)) && summary+=" (--all lists them)"
	((IPC_N_FILTERED > 0)) && summary+=", $IPC_N_FILTERED not matching the filters"
	((IPC_N_OTHER > 0)) && summary+=", $IPC_N_OTHER of other users not considered"
	printf 'uid %s: %s\n' "$EUID" "$summary"
	if ((${#REG_STALE[@]} > 0)); then
		if [[ -n $reap ]]; then
			printf 'registry %s: removed %d entries of objects that no longer exist\n' "$REG_DIR" "${#REG_STALE[@]}"
		else
			printf 'registry %s: %d entries of objects that no longer exist (--reap deletes them)\n' \
				"$REG_DIR" "${#REG_STALE[@]}"
		fi
	fi
	if ((${#REG_BAD[@]} > 0)); then
		printf 'registry %s: %d malformed entries of objects that no longer exist, left alone:\n' \
			"$REG_DIR" "${#REG_BAD[@]}"
		for line in "${REG_BAD[@]}"; do
			esc line "$line"
			printf '  %s\n' "$line"
		done
	fi
	exit "$rc"
}

