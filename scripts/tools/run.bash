# fdguard run: run a command with libfdguard.so preloaded.
# shellcheck shell=bash source-path=SCRIPTDIR

# shellcheck source=common.bash
. "${BASH_SOURCE[0]%/*}/common.bash"

# option|variable|check [check args...]: the value options of `fdguard run`.
RUN_OPTIONS=(
	"only|FDGUARD_ONLY|check_only"
	"accept|FDGUARD_ACCEPT|check_enum on off"
	"accept-errno|FDGUARD_ACCEPT_ERRNO|check_enum EAGAIN EMFILE"
	"reject-msg|FDGUARD_REJECT_MSG|check_escapes"
	"headroom|FDGUARD_HEADROOM|check_uint 0 1048576"
	"epoll|FDGUARD_EPOLL|check_enum on off"
	"epollexclusive|FDGUARD_EPOLLEXCLUSIVE|check_enum on off"
	"dlopen|FDGUARD_DLOPEN|check_enum keep cache off"
	"dlopen-keep|FDGUARD_DLOPEN_KEEP|check_uint 1 65536"
	"dlopen-retries|FDGUARD_DLOPEN_RETRIES|check_uint 0 100"
	"backoff-max-ms|FDGUARD_BACKOFF_MAX_MS|check_uint 1 60000"
	"log|FDGUARD_LOG|check_log"
	"log-level|FDGUARD_LOG_LEVEL|check_enum quiet error warn info debug"
	"stats|FDGUARD_STATS|check_abspath"
)

usage_run() {
	cat <<'EOF'
Usage: fdguard run [OPTIONS] -- CMD [ARGS...]

Run CMD with libfdguard.so prepended to LD_PRELOAD. Each option sets one
variable; variables not given keep the value they have in the environment.
Defaults (the shim's) come first in each list.

Options:
  --on, --off                FDGUARD: --off makes every wrapper a pass-through
  --only LIST                FDGUARD_ONLY: guard only these programs
                             (comma list of names, no slashes)
  --accept on|off            FDGUARD_ACCEPT: EMFILE/ENFILE relief in accept
  --accept-errno EAGAIN|EMFILE
                             FDGUARD_ACCEPT_ERRNO: what a non-blocking accept
                             returns after the backlog was shed
  --reject-msg STR           FDGUARD_REJECT_MSG: bytes sent to a shed client;
                             escapes \r \n \t \\ \xHH
  --headroom N               FDGUARD_HEADROOM: shed while fewer than N
                             descriptors would remain free (0..1048576, 0)
  --epoll on|off             FDGUARD_EPOLL: EPOLL_CTL_DEL before close, dup2,
                             dup3 and close_range
  --epollexclusive off|on    FDGUARD_EPOLLEXCLUSIVE: EPOLLEXCLUSIVE for
                             listening sockets added to an epoll set
  --dlopen keep|cache|off    FDGUARD_DLOPEN: dlopen caching mode
  --dlopen-keep N            FDGUARD_DLOPEN_KEEP: idle objects kept resident
                             in keep mode (1..65536, 64)
  --dlopen-retries N         FDGUARD_DLOPEN_RETRIES: retries of a transient
                             loader failure (0..100, 4)
  --backoff-max-ms N         FDGUARD_BACKOFF_MAX_MS: cap of every backoff
                             (1..60000, 100)
  --log stderr|syslog|PATH   FDGUARD_LOG: where events go (PATH absolute)
  --log-level warn|quiet|error|info|debug
                             FDGUARD_LOG_LEVEL
  --stats PATH               FDGUARD_STATS: live counters for fdguard stat
                             (absolute path; %p is replaced by the pid)
  -h, --help                 show this help

Values are given as '--opt VALUE' or '--opt=VALUE'. Without '--', the first
word that is not an option starts CMD.

Environment:
  FDGUARD_LIB   the library to preload; default ../build/libfdguard.so next to
                this script, else ../lib/fdguard/libfdguard.so

Exit status: 2 usage error, 1 library not found, 127 CMD not found,
126 CMD not executable; otherwise fdguard execs CMD (same pid).
EOF
}

# resolve_cmd CMD: exit 127 if CMD cannot be found, 126 if it is not executable
# (as a shell would; `type -P` falls back to a match that is not executable).
resolve_cmd() {
	local cmd=$1 path
	if [[ $cmd == */* ]]; then
		path=$cmd
		if [[ ! -e $path ]]; then
			die_status 127 "$cmd: command not found"
		fi
	elif [[ -z $cmd ]] || ! path=$(type -P -- "$cmd"); then
		die_status 127 "$cmd: command not found"
	fi
	if [[ -d $path || ! -x $path ]]; then
		die_status 126 "$cmd: permission denied ($path is not an executable file)"
	fi
}

# preload_with LIB: print LD_PRELOAD with LIB in front, unless already present.
preload_with() {
	local lib=$1 current=${LD_PRELOAD-} entry
	local -a entries
	IFS=': ' read -r -a entries <<<"$current"
	for entry in "${entries[@]}"; do
		if [[ $entry == "$lib" || $entry -ef $lib ]]; then
			printf '%s\n' "$current"
			return 0
		fi
	done
	if ((${#entries[@]} == 0)); then
		printf '%s\n' "$lib"
	else
		printf '%s:%s\n' "$lib" "$current"
	fi
}

cmd_run() {
	local arg name value entry opt var check lib found
	local -a sets=() check_args
	while (($# > 0)); do
		arg=$1
		case $arg in
		--)
			shift
			break
			;;
		-h | --help)
			usage_run
			exit 0
			;;
		--on | --off)
			sets+=("FDGUARD=${arg#--}")
			shift
			continue
			;;
		--on=* | --off=*)
			die_usage "option ${arg%%=*} takes no value"
			;;
		--?*) ;;
		-?*)
			die_usage "unknown option: $arg"
			;;
		*) break ;; # first word that is not an option starts the command
		esac

		name=${arg#--}
		name=${name%%=*}
		found=
		for entry in "${RUN_OPTIONS[@]}"; do
			if [[ ${entry%%|*} == "$name" ]]; then
				found=$entry
				break
			fi
		done
		if [[ -z $found ]]; then
			die_usage "unknown option: ${arg%%=*}"
		fi
		opt=--$name
		if [[ $arg == *=* ]]; then
			value=${arg#*=}
			shift
		elif (($# >= 2)); then
			value=$2
			shift 2
		else
			die_usage "option $opt requires a value"
		fi
		IFS='|' read -r _ var check <<<"$found"
		read -r -a check_args <<<"$check"
		"${check_args[@]:0:1}" "$opt" "$value" "${check_args[@]:1}"
		sets+=("$var=$value")
	done

	if (($# == 0)); then
		die_usage "no command given"
	fi

	lib=$(find_lib) || exit 1
	resolve_cmd "$1"

	for entry in "${sets[@]}"; do
		export "${entry%%=*}=${entry#*=}"
	done
	LD_PRELOAD=$(preload_with "$lib")
	export LD_PRELOAD
	exec -- "$@"
}

