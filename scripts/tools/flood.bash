# fdguard flood: many connections at once, each answer classified.
# shellcheck shell=bash source-path=SCRIPTDIR

# shellcheck source=common.bash
. "${BASH_SOURCE[0]%/*}/common.bash"

FLOOD_MAX_N=10000
FLOOD_MAX_HOLD=3600

usage_flood() {
	cat <<EOF
Usage: fdguard flood ADDRESS [-n N] [--hold SECS] [--send DATA] [--wait-ms MS]
                     [--greeting TEXT] [--reject TEXT] [--probe DATA] [--json]

Opens N connections to a server at once and tells how each was answered,
with the time from connect() to that answer (p50 and max per result):

  served    accepted and answered: a first line equal to --greeting
            (default HELLO), or with --send any answer that does not start
            with --reject
  rejected  answered with something else (a rejection such as fdguard's
            FDGUARD_REJECT_MSG), or a first line starting with --reject
  closed    closed without a word (EOF or reset): shed without a message
  hanging   no answer within --wait-ms: left in the listen backlog
  failed    the connect itself failed (refused, or a full unix backlog)

ADDRESS is HOST:PORT, [IPV6]:PORT, unix:PATH, or a bare PORT (127.0.0.1).
Only the address given is contacted, once per connection: no scanning, no
retries. Bounded: N is 1..$FLOOD_MAX_N, --hold 0..$FLOOD_MAX_HOLD s, --wait-ms 1..60000.

Options:
  -n N            connections (default 10)
  --hold SECS     keep the served connections open that long after the report
                  (SIGTERM or SIGINT ends it; SIGUSR1 sends --probe on each and
                  reports how many still answer)
  --send DATA     sent after connecting (escapes \\r \\n \\t \\\\ \\xHH)
  --wait-ms MS    how long to wait for each first answer (default 1000)
  --greeting T    the first line of a served connection (default HELLO)
  --reject T      a first line starting with T is a rejection
  --probe DATA    what SIGUSR1 sends on held connections (default ping\\n)
  --json          one JSON object (then, while holding, probe lines as text)
  -h, --help      show this help

The client is the flood program that make builds next to the library:
FDGUARD_FLOOD overrides, else ../build/flood next to this script (source
tree), else ../lib/fdguard/flood (make install).

Exit status: 0 every connection was answered (served, rejected or closed),
1 some hang or failed (or the client is missing), 2 usage error.
EOF
}

# find_flood: the flood client, or die.
find_flood() {
	if [[ -n ${FDGUARD_FLOOD:-} ]]; then
		[[ -x $FDGUARD_FLOOD && -f $FDGUARD_FLOOD ]] || die "FDGUARD_FLOOD=$FDGUARD_FLOOD: not an executable file"
		printf '%s\n' "$FDGUARD_FLOOD"
		return
	fi
	find_bin flood
}

# ms_text VALUE: "VALUE ms", or "-".
ms_text() {
	if [[ $1 == - ]]; then
		echo -
	else
		echo "$1 ms"
	fi
}

# What the client reported: its per-connection lines, summary, rejection
# texts and connect errors; FL_BAD: connections hanging or failed.
FL_CONNS=() FL_SUMMARY='' FL_TEXTS=() FL_ERRORS=() FL_BAD=0

# flood_report ADDRESS N WAIT_MS JSON: the report, from the client's output
# collected in FL_CONNS (conn lines), FL_SUMMARY, FL_TEXTS and FL_ERRORS.
flood_report() {
	local addr=$1 n=$2 wait=$3 json=$4 r i name c a b
	local -A count=() p50=() max=()
	local -a stats
	mapfile -t stats < <(printf '%s\n' "${FL_CONNS[@]}" | awk '
		$1 == "conn" { r = $3; c[r]++; if ($4 ~ /ms$/) { v = $4; sub(/ms$/, "", v); ms[r, ++k[r]] = v + 0 } }
		END {
			split("served rejected closed hanging failed", names, " ")
			for (j = 1; j <= 5; j++) {
				r = names[j]; m = k[r] + 0
				# insertion sort: at most 10000 values per result
				for (a = 2; a <= m; a++) { x = ms[r, a]; b = a - 1
					while (b >= 1 && ms[r, b] > x) { ms[r, b + 1] = ms[r, b]; b-- }
					ms[r, b + 1] = x }
				if (m > 0) printf "%s %d %.2f %.2f\n", r, c[r], ms[r, int((m + 1) / 2)], ms[r, m]
				else printf "%s %d - -\n", r, c[r] + 0
			}
		}')
	for r in "${stats[@]}"; do
		read -r name c a b <<<"$r"
		count[$name]=$c p50[$name]=$a max[$name]=$b
	done
	if [[ -n $json ]]; then
		printf '{"address":%s,"n":%s,"wait_ms":%s' "$(json_str "$addr")" "$n" "$wait"
		for r in served rejected closed hanging failed; do
			printf ',"%s":{"count":%s,"answer_ms_p50":%s,"answer_ms_max":%s}' "$r" "${count[$r]}" \
				"$([[ ${p50[$r]} == - ]] && echo null || echo "${p50[$r]}")" \
				"$([[ ${max[$r]} == - ]] && echo null || echo "${max[$r]}")"
		done
		printf ',"rejected_texts":['
		for ((i = 0; i < ${#FL_TEXTS[@]}; i++)); do
			((i > 0)) && printf ','
			json_str "${FL_TEXTS[i]}"
		done
		printf '],"failed_errors":['
		for ((i = 0; i < ${#FL_ERRORS[@]}; i++)); do
			((i > 0)) && printf ','
			json_str "${FL_ERRORS[i]}"
		done
		printf ']}\n'
	else
		printf 'fdguard flood %s: %s connections, each answer awaited up to %s ms\n\n' "$addr" "$n" "$wait"
		{
			row RESULT COUNT 'ANSWER p50' MAX MEANING
			for r in served rejected closed hanging failed; do
				local meaning
				case $r in
				served) meaning="accepted and answered" ;;
				rejected) meaning="answered with a rejection" ;;
				closed) meaning="closed without an answer (shed silently, or reset)" ;;
				hanging) meaning="no answer within $wait ms: left in the backlog" ;;
				failed) meaning="the connect failed" ;;
				esac
				row "$r" "${count[$r]}" "$(ms_text "${p50[$r]}")" "$(ms_text "${max[$r]}")" "$meaning"
			done
		} | print_table
		for r in "${FL_TEXTS[@]}"; do
			esc r "$r"
			printf 'rejection text: %s\n' "$r"
		done
		for r in "${FL_ERRORS[@]}"; do
			printf 'connect error: %s\n' "$r"
		done
	fi
	FL_BAD=$((count[hanging] + count[failed]))
}

cmd_flood() {
	local arg addr='' n=10 hold=0 wait=1000 json='' bin line st reported='' name c a b text
	local -a args=()
	tools_init
	while (($# > 0)); do
		arg=$1
		shift
		case $arg in
		-h | --help)
			usage_flood
			exit 0
			;;
		--json) json=1 ;;
		-n | --hold | --send | --wait-ms | --greeting | --reject | --probe)
			(($# > 0)) || die_usage "option $arg requires a value"
			set -- "$arg=$1" "${@:2}"
			continue
			;;
		-n=*)
			check_uint -n "${arg#*=}" 1 "$FLOOD_MAX_N"
			n=$((10#${arg#*=}))
			;;
		--hold=*)
			check_uint --hold "${arg#*=}" 0 "$FLOOD_MAX_HOLD"
			hold=$((10#${arg#*=}))
			;;
		--wait-ms=*)
			check_uint --wait-ms "${arg#*=}" 1 60000
			wait=$((10#${arg#*=}))
			;;
		--send=* | --probe=*)
			check_escapes "${arg%%=*}" "${arg#*=}"
			args+=("${arg%%=*}" "${arg#*=}")
			;;
		--greeting=* | --reject=*)
			[[ -n ${arg#*=} ]] || die_usage "${arg%%=*}: empty value"
			args+=("${arg%%=*}" "${arg#*=}")
			;;
		-*) die_usage "unknown option: ${arg%%=*}" ;;
		*)
			[[ -z $addr ]] || die_usage "more than one address given"
			addr=$arg
			;;
		esac
	done
	[[ -n $addr ]] || die_usage "no address given"
	if [[ $addr =~ ^[0-9]+$ ]]; then
		addr=127.0.0.1:$addr
	fi
	if [[ $addr == unix:* ]]; then
		[[ -n ${addr#unix:} ]] || die_usage "unix: needs a path"
	elif [[ ! $addr =~ ^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]+)$ ]] ||
		((${#BASH_REMATCH[2]} > 5 || 10#${BASH_REMATCH[2]} < 1 || 10#${BASH_REMATCH[2]} > 65535)); then
		die_usage "invalid address '$addr' (expected HOST:PORT, [IPV6]:PORT, unix:PATH or PORT)"
	fi
	bin=$(find_flood) || exit 1
	args=("$addr" -n "$n" --hold "$hold" --wait-ms "$wait" -v "${args[@]}")

	FL_CONNS=() FL_SUMMARY='' FL_TEXTS=() FL_ERRORS=() FL_BAD=0
	local fl_pid
	exec {fl_out}< <(exec "$bin" "${args[@]}")
	fl_pid=$!
	trap 'kill -TERM "$fl_pid" 2>/dev/null' TERM INT
	trap 'kill -USR1 "$fl_pid" 2>/dev/null' USR1
	while :; do
		# While holding, the client writes nothing after the summary and its
		# text lines: report once 0.3 s pass without a line.
		if [[ -n $FL_SUMMARY && -z $reported ]]; then
			IFS= read -r -t 0.3 line <&"$fl_out"
		else
			IFS= read -r line <&"$fl_out"
		fi
		st=$?
		if ((st == 0)); then
			case $line in
			'conn '*) FL_CONNS+=("$line") ;;
			'flood: '*) FL_SUMMARY=$line ;;
			'rejected-text: '*)
				# The client writes it escaped (\xHH): the bytes, for the JSON.
				text=${line#rejected-text: }
				is_escaped "$text" && unesc text "$text"
				FL_TEXTS+=("$text")
				;;
			'failed-error: '*) FL_ERRORS+=("${line#failed-error: }") ;;
			'flood-probe: '*)
				read -r _ name c a b <<<"$line"
				printf 'probe: %s %s %s %s\n' "$name" "$c" "$a" "$b"
				;;
			*) printf '%s\n' "$line" ;;
			esac
			continue
		fi
		if [[ -n $FL_SUMMARY && -z $reported ]] && ((st > 128 || st == 1)); then
			flood_report "$addr" "$n" "$wait" "$json"
			reported=1
			((hold > 0)) && printf 'holding the served connections for %s s (SIGTERM ends, SIGUSR1 probes)\n' "$hold" >&2
			((st > 128)) && continue
			break
		fi
		# A trapped signal interrupts read: go on reading until EOF.
		((st > 128)) && continue
		break
	done
	exec {fl_out}<&-
	wait "$fl_pid" 2>/dev/null
	st=$?
	if [[ -z $FL_SUMMARY ]]; then
		((st == 2)) && exit 2
		die "the flood client ended without a report (exit $st)"
	fi
	((FL_BAD > 0)) && exit 1
	exit 0
}

