# fdguard tools: what the subcommands share (messages and exits, the library
# and helper programs, option checks, /proc readers, JSON and text output).
# Sourced by every subcommand file; defines functions and globals only.
# shellcheck shell=bash source-path=SCRIPTDIR

[[ -z ${FDG_COMMON_LOADED:-} ]] || return 0
FDG_COMMON_LOADED=1

# The subcommand being run, for die_usage; empty at the top level.
FDGUARD_SUB=${FDGUARD_SUB:-}

# die MSG: error, exit 1. MSG may carry names (programs, paths): it is
# printed escaped (esc).
die() {
	die_status 1 "$1"
}

# die_status STATUS MSG: error with a chosen exit status.
die_status() {
	local msg
	esc msg "$2"
	printf 'fdguard%s: %s\n' "${FDGUARD_SUB:+ $FDGUARD_SUB}" "$msg" >&2
	exit "$1"
}

# die_usage MSG: usage error: MSG (escaped, as in die: it quotes the
# caller's arguments), then the usage of the current subcommand (or the
# top-level usage), on stderr; exit 2.
die_usage() {
	local msg
	esc msg "$1"
	printf 'fdguard%s: %s\n' "${FDGUARD_SUB:+ $FDGUARD_SUB}" "$msg" >&2
	if [[ -n $FDGUARD_SUB ]]; then
		"usage_${FDGUARD_SUB//-/_}" >&2
	else
		usage_main >&2
	fi
	exit 2
}


# find_lib: print the absolute path of libfdguard.so, or die (exit 1).
# FDGUARD_LIB overrides; otherwise the library is looked for next to the real
# path of the fdguard script (FDG_SELF_DIR, set by it): ../build (source tree),
# then ../lib/fdguard (make install).
find_lib() {
	local dir=${FDG_SELF_DIR:?} lib
	if [[ -n ${FDGUARD_LIB:-} ]]; then
		if [[ ! -f $FDGUARD_LIB ]]; then
			die "FDGUARD_LIB=$FDGUARD_LIB: no such file"
		fi
		lib=$(readlink -f -- "$FDGUARD_LIB") || die "FDGUARD_LIB=$FDGUARD_LIB: cannot resolve the path"
	elif [[ -f $dir/../build/libfdguard.so ]]; then
		lib=$(readlink -f -- "$dir/../build/libfdguard.so")
	elif [[ -f $dir/../lib/fdguard/libfdguard.so ]]; then
		lib=$(readlink -f -- "$dir/../lib/fdguard/libfdguard.so")
	else
		die "libfdguard.so not found (run make; looked in ${dir%/*}/build and ${dir%/*}/lib/fdguard; FDGUARD_LIB overrides)"
	fi
	# ld.so splits LD_PRELOAD at spaces and colons: such a path cannot be preloaded.
	if [[ $lib == *[:\ ]* ]]; then
		die "$lib: LD_PRELOAD cannot carry a path that contains a space or a colon"
	fi
	printf '%s\n' "$lib"
}

# find_bin NAME: print the absolute path of the helper program NAME that make
# builds next to the library (flood, statsread), or die. Looked for next to
# FDGUARD_LIB when it is set (a build of its own: the tests' sanitizer
# builds), then in ../build (source tree) and ../lib/fdguard (make install).
find_bin() {
	local dir=${FDG_SELF_DIR:?} cand
	local -a dirs=()
	[[ -n ${FDGUARD_LIB:-} ]] && dirs+=("$(dirname -- "$FDGUARD_LIB")")
	dirs+=("$dir/../build" "$dir/../lib/fdguard")
	for cand in "${dirs[@]}"; do
		if [[ -f $cand/$1 && -x $cand/$1 ]]; then
			readlink -f -- "$cand/$1"
			return 0
		fi
	done
	die "$1 not found (run make; looked in ${dir%/*}/build and ${dir%/*}/lib/fdguard)"
}

# --- validation (mirrors what the shim accepts) ------------------------------

# check_enum OPT VALUE ALLOWED...
check_enum() {
	local opt=$1 value=$2 allowed
	shift 2
	for allowed in "$@"; do
		if [[ $value == "$allowed" ]]; then
			return 0
		fi
	done
	local list=$*
	die_usage "$opt: invalid value '$value' (expected ${list// /, })"
}

# check_uint OPT VALUE MIN MAX: decimal integer in [MIN, MAX].
check_uint() {
	local opt=$1 value=$2 min=$3 max=$4 digits
	if [[ $value =~ ^[0-9]+$ ]]; then
		digits=${value#"${value%%[!0]*}"} # strip leading zeros
		digits=${digits:-0}
		if ((${#digits} <= ${#max} && 10#$digits >= min && 10#$digits <= max)); then
			return 0
		fi
	fi
	die_usage "$opt: invalid value '$value' (expected an integer from $min to $max)"
}

# check_only OPT VALUE: comma list of program names, none empty, no slashes.
check_only() {
	local opt=$1 value=$2 name
	local -a names
	if [[ -z $value || $value == ,* || $value == *, ]]; then
		die_usage "$opt: invalid value '$value' (expected a comma list of program names)"
	fi
	IFS=, read -r -a names <<<"$value"
	for name in "${names[@]}"; do
		if [[ -z $name || $name == */* ]]; then
			die_usage "$opt: invalid value '$value' (expected a comma list of program names, without slashes)"
		fi
	done
}

# bytes VALUE: length of VALUE in bytes (whatever the locale).
bytes() {
	printf '%s' "$1" | wc -c
}

# check_escapes OPT VALUE: only the escapes \r \n \t \\ \xHH, and at most
# 1024 bytes once decoded (the shim's buffer).
check_escapes() {
	local opt=$1 value=$2 rest=$2 saved=0 len
	while [[ $rest == *\\* ]]; do
		rest=${rest#*\\}
		case $rest in
		[rnt\\]*) rest=${rest:1} saved=$((saved + 1)) ;;
		x[0-9A-Fa-f][0-9A-Fa-f]*) rest=${rest:3} saved=$((saved + 3)) ;;
		'') die_usage "$opt: trailing backslash in '$value' (escapes: \\r \\n \\t \\\\ \\xHH)" ;;
		x*) die_usage "$opt: invalid escape '\\${rest:0:3}' in '$value' (\\x needs two hex digits)" ;;
		*) die_usage "$opt: invalid escape '\\${rest:0:1}' in '$value' (escapes: \\r \\n \\t \\\\ \\xHH)" ;;
		esac
	done
	len=$(($(bytes "$value") - saved))
	if ((len > 1024)); then
		die_usage "$opt: message too long ($len bytes once decoded; at most 1024)"
	fi
}

# check_log OPT VALUE: stderr, syslog or an absolute path.
check_log() {
	case $2 in
	stderr | syslog) ;;
	/*) check_abspath "$1" "$2" ;;
	*) die_usage "$1: invalid value '$2' (expected stderr, syslog or an absolute path)" ;;
	esac
}

# check_abspath OPT VALUE: an absolute path shorter than 4096 bytes.
check_abspath() {
	if [[ $2 != /* ]]; then
		die_usage "$1: invalid value '$2' (expected an absolute path)"
	fi
	if (($(bytes "$2") >= 4096)); then
		die_usage "$1: path too long (at most 4095 bytes)"
	fi
}


# --- helpers of the operator tools (doctor, stat, ipc, squeeze, flood) -------

# Every parsing below reads /proc and the output of ipcs: C locale for the
# programs it runs; empty globs expand to nothing.
tools_init() {
	shopt -s nullglob
	export LC_ALL=C
}

# need_pid ARG: ARG is a process id (usage error otherwise) of a process that
# exists (exit 1 otherwise); sets PID.
need_pid() {
	if [[ ! $1 =~ ^[0-9]+$ ]] || ((${#1} > 9 || 10#$1 == 0)); then
		die_usage "invalid pid '$1' (expected a process id)"
	fi
	PID=$((10#$1))
	if [[ ! -d /proc/$PID ]]; then
		die "no process with pid $PID"
	fi
}

# proc_fields PID: sets PF to the fields of /proc/PID/stat after the command
# name (PF[0] is field 3, the state; PF[19] is field 22, the start time).
proc_fields() {
	local stat=''
	# No subshell: ipc and doctor ask this for many pids. (-d '': the
	# command name may hold a newline; read then reports EOF.)
	{ read -r -d '' stat <"/proc/$1/stat"; } 2>/dev/null
	[[ $stat == *') '* ]] || return 1
	# shellcheck disable=SC2034 # PF is read by the callers
	read -r -a PF <<<"${stat##*) }"
}

# proc_alive PID: PID exists and is not a zombie.
proc_alive() {
	local -a PF
	proc_fields "$1" || return 1
	[[ ${PF[0]} != [ZX] ]]
}

# proc_start PID: its start time (clock ticks since boot, field 22 of stat).
proc_start() {
	local -a PF
	proc_fields "$1" || return 1
	printf '%s\n' "${PF[19]}"
}

# proc_name PID: its command name, or "?".
proc_name() {
	local comm
	{ read -r comm <"/proc/$1/comm"; } 2>/dev/null || comm='?'
	printf '%s\n' "$comm"
}

# proc_uid PID: its real uid.
proc_uid() {
	awk '/^Uid:/ { print $2; exit }' "/proc/$1/status" 2>/dev/null
}

# user_name UID: the name of a uid, or the uid.
user_name() {
	local name
	name=$(id -nu "$1" 2>/dev/null) || name=$1
	printf '%s\n' "$name"
}

BOOT_EPOCH=''
CLK_TCK=''

# start_epoch PID: sets SE to when PID started, in seconds since the epoch
# (rounded down).
SE=''
start_epoch() {
	local -a PF
	proc_fields "$1" || return 1
	if [[ -z $BOOT_EPOCH ]]; then
		BOOT_EPOCH=$(awk '/^btime/ { print $2 }' /proc/stat)
		CLK_TCK=$(getconf CLK_TCK 2>/dev/null) || CLK_TCK=100
	fi
	SE=$((BOOT_EPOCH + PF[19] / CLK_TCK))
}

# pid_state PID [REF]: sets PS to what became of a pid recorded by the kernel
# at time REF (seconds since the epoch): none (pid 0: never set, or not
# visible in this pid namespace), dead (gone, or a zombie), reused (a process
# that started more than 2 s after REF: not the one recorded), alive.
PS=''
# shellcheck disable=SC2034 # PS is read by the callers (ipc)
pid_state() {
	local pid=$1 ref=${2:-}
	if [[ $pid == 0 ]]; then
		PS=none
	elif ! proc_alive "$pid"; then
		PS=dead
	elif [[ -n $ref ]] && start_epoch "$pid" && ((SE > ref + 2)); then
		PS=reused
	else
		PS=alive
	fi
}

# now_epoch: seconds since the epoch.
now_epoch() {
	printf '%(%s)T\n' -1
}

# is_unlimited LIMIT: empty, "unlimited", "max" or 10^18 and more (the
# kernel's "no limit" values: RLIM_INFINITY, PAGE_COUNTER_MAX, ULONG_MAX...).
is_unlimited() {
	[[ -z $1 || $1 == unlimited || $1 == max || ${#1} -ge 19 ]]
}

# Names (programs, paths) are bytes chosen by whoever started the process: an
# ESC sequence or a newline in one must not reach the terminal, shift a
# column or break a JSON document. Text output shows them escaped (esc),
# JSON carries them encoded (json_q). Both work byte by byte, in the C locale
# (tools_init; esc sets it for itself: die and die_usage run before it).

# esc VAR STRING: sets VAR to STRING with every byte outside printable ASCII
# (0x20..0x7e), and the backslash, written as \xHH: the escaping the shim uses
# for program names in its files. The result is ASCII: one column per byte.
# (Locals are prefixed: VAR names the caller's variable.)
esc() {
	# Bytes, whatever the caller's locale (run and the dispatcher keep it).
	local LC_ALL=C
	local _es=$2 _eo='' _ec _en _ei
	if [[ $_es != *[!\ -~]* && $_es != *\\* ]]; then
		printf -v "$1" '%s' "$_es"
		return
	fi
	for ((_ei = 0; _ei < ${#_es}; _ei++)); do
		_ec=${_es:_ei:1}
		if [[ $_ec == [\ -~] && $_ec != \\ ]]; then
			_eo+=$_ec
		else
			printf -v _en '%d' "'$_ec"
			printf -v _ec '\\x%02x' $((_en & 255))
			_eo+=$_ec
		fi
	done
	printf -v "$1" '%s' "$_eo"
}

# is_escaped STRING: STRING is in the shim's escaped form (printable ASCII,
# a backslash only as \xHH).
is_escaped() {
	local _rest=${1//\\x[0-9a-fA-F][0-9a-fA-F]/}
	[[ $1 != *[!\ -~]* && $_rest != *\\* ]]
}

# unesc VAR STRING: sets VAR to the bytes of STRING, in the shim's escaped
# form (check it with is_escaped first). \x00 stays as the four characters:
# a shell string cannot hold a NUL.
unesc() {
	local _us=$2 _uo='' _uh _ub
	while [[ $_us == *\\x* ]]; do
		_uo+=${_us%%\\x*}
		_us=${_us#*\\x}
		_uh=${_us:0:2} _us=${_us:2}
		if [[ $_uh == 00 ]]; then
			_uo+='\x00'
		else
			printf -v _ub %b "\\x$_uh"
			_uo+=$_ub
		fi
	done
	printf -v "$1" '%s' "$_uo$_us"
}

# json_str STRING: prints STRING as a JSON string literal.
json_str() {
	local _jq
	json_q _jq "$1"
	printf '%s' "$_jq"
}

# json_q VAR STRING: sets VAR to STRING as a JSON string literal (no subshell),
# valid JSON whatever the bytes: well-formed UTF-8 is kept as it is (C1
# controls U+0080..U+009F escaped); control bytes, and every byte that is not
# part of well-formed UTF-8, become \u00XX with XX the byte's value (so
# $'\xff' is "\u00ff": the byte read as Latin-1, not lost).
json_q() {
	local _js=$2 _jo='' _jc _jn _ji=0 _jk _jlen _jneed _jlo _jhi _jb _jok
	if [[ $_js != *[!\ -~]* ]]; then
		_js=${_js//\\/\\\\}
		_js=${_js//\"/\\\"}
		printf -v "$1" '\x22%s\x22' "$_js"
		return
	fi
	_jlen=${#_js}
	while ((_ji < _jlen)); do
		_jc=${_js:_ji:1}
		printf -v _jn '%d' "'$_jc"
		_jn=$((_jn & 255))
		if ((_jn >= 0x20 && _jn < 0x7f)); then
			[[ $_jc == [\\\"] ]] && _jo+=$'\\'
			_jo+=$_jc
			_ji=$((_ji + 1))
			continue
		fi
		case $_jn in
		10) _jo+='\n' ;;
		9) _jo+='\t' ;;
		13) _jo+='\r' ;;
		esac
		if ((_jn == 9 || _jn == 10 || _jn == 13)); then
			_ji=$((_ji + 1))
			continue
		fi
		# The length of the UTF-8 sequence this byte starts, and the range
		# allowed for its second byte (RFC 3629: no overlongs, no surrogates,
		# at most U+10FFFF).
		_jneed=0 _jlo=0x80 _jhi=0xbf
		if ((_jn >= 0xc2 && _jn <= 0xdf)); then
			_jneed=1
		elif ((_jn == 0xe0)); then
			_jneed=2 _jlo=0xa0
		elif ((_jn == 0xed)); then
			_jneed=2 _jhi=0x9f
		elif ((_jn >= 0xe1 && _jn <= 0xef)); then
			_jneed=2
		elif ((_jn == 0xf0)); then
			_jneed=3 _jlo=0x90
		elif ((_jn >= 0xf1 && _jn <= 0xf3)); then
			_jneed=3
		elif ((_jn == 0xf4)); then
			_jneed=3 _jhi=0x8f
		fi
		_jok=$((_jneed > 0 && _ji + _jneed < _jlen))
		for ((_jk = 1; _jok && _jk <= _jneed; _jk++)); do
			printf -v _jb '%d' "'${_js:_ji+_jk:1}"
			_jb=$((_jb & 255))
			((_jb >= (_jk == 1 ? _jlo : 0x80) && _jb <= (_jk == 1 ? _jhi : 0xbf))) || _jok=0
		done
		if ((_jok)) && ! ((_jn == 0xc2 && _jb < 0xa0)); then
			_jo+=${_js:_ji:_jneed+1}
			_ji=$((_ji + _jneed + 1))
		elif ((_jok)); then
			printf -v _jc '\\u%04x' "$_jb" # a C1 control
			_jo+=$_jc
			_ji=$((_ji + 2))
		else
			printf -v _jc '\\u%04x' "$_jn"
			_jo+=$_jc
			_ji=$((_ji + 1))
		fi
	done
	printf -v "$1" '\x22%s\x22' "$_jo"
}

# json_num VALUE: VALUE if it is an integer below 10^18, otherwise null.
json_num() {
	if [[ $1 =~ ^-?[0-9]+$ ]] && ((${#1} < 19)); then
		printf '%s' "$1"
	else
		printf 'null'
	fi
}

# print_table: rows on stdin, fields separated by \037; columns padded to
# their widest cell, the last one not.
print_table() {
	awk -F '\037' '
	{
		rows[NR] = $0
		for (i = 1; i <= NF; i++) if (length($i) > w[i]) w[i] = length($i)
	}
	END {
		for (r = 1; r <= NR; r++) {
			n = split(rows[r], f, "\037")
			line = ""
			for (i = 1; i < n; i++) line = line sprintf("%-" w[i] "s  ", f[i])
			line = line f[n]
			sub(/ +$/, "", line)
			print line
		}
	}'
}

# row FIELD...: one row for print_table, each field escaped (esc): names and
# notes are raw bytes until they are printed, and a field cannot hold the
# separator.
row() {
	local IFS=$'\037' f
	local -a out=()
	for f in "$@"; do
		esc f "$f"
		out+=("$f")
	done
	printf '%s\n' "${out[*]}"
}

# limits_of PID NAME: "SOFT HARD" of a /proc/PID/limits line ("Max open files").
limits_of() {
	local line rest
	local -a f
	line=$(grep -m1 "^$2  " "/proc/$1/limits" 2>/dev/null) || return 1
	rest=${line#"$2"}
	read -r -a f <<<"$rest"
	printf '%s %s\n' "${f[0]}" "${f[1]}"
}
