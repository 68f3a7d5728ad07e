#!/usr/bin/env bats
# The fdguard command line: dispatcher, `fdguard run` options, validation,
# library lookup, LD_PRELOAD and exec. None of it needs a working library:
# FDGUARD_LIB points at an empty stand-in file, and the commands run under it
# (env, sh, printf) show what `run` exported. ld.so warns on stderr that it
# cannot preload the stand-in, so the checks read stdout only.

bats_require_minimum_version 1.5.0

load lib

setup() {
	FDG="$BATS_TEST_DIRNAME/../scripts/fdguard"
	FAKE_LIB="$BATS_TEST_TMPDIR/libfdguard.so"
	: >"$FAKE_LIB"
	export FDGUARD_LIB="$FAKE_LIB"
	# Start from an environment without any fdguard setting.
	local v
	for v in $(compgen -e FDGUARD); do
		if [[ $v != FDGUARD_LIB ]]; then
			unset "$v"
		fi
	done
	unset LD_PRELOAD
}

# copy_fdguard ROOT src|prefix: a copy of the fdguard command (the dispatcher and
# its tool files) laid out as in the source tree (ROOT/scripts/fdguard,
# ROOT/scripts/tools) or as make install does (ROOT/bin/fdguard,
# ROOT/lib/fdguard/tools).
copy_fdguard() {
	local root=$1 tools
	if [[ $2 == src ]]; then
		mkdir -p "$root/scripts"
		cp "$FDG" "$root/scripts/fdguard"
		tools=$root/scripts/tools
	else
		mkdir -p "$root/bin" "$root/lib/fdguard"
		cp "$FDG" "$root/bin/fdguard"
		tools=$root/lib/fdguard/tools
	fi
	cp -r "${FDG%/*}/tools" "$tools"
}

# fdg_env OPTIONS...: `fdguard run OPTIONS -- env`; the environment in $output.
fdg_env() {
	run --separate-stderr "$FDG" run "$@" -- env
}

# has_var NAME VALUE: $output (env) has the line NAME=VALUE.
has_var() {
	local line
	while IFS= read -r line; do
		if [[ $line == "$1=$2" ]]; then
			return 0
		fi
	done <<<"$output"
	echo "expected $1=$2 in the command's environment; fdguard settings were:"
	grep -E '^(FDGUARD|LD_PRELOAD)' <<<"$output" || true
	return 1
}

# fdg_vars: the FDGUARD_* variables (but FDGUARD_LIB) in $output, one a line.
fdg_vars() {
	grep -E '^FDGUARD(_[A-Z_]+)?=' <<<"$output" | grep -v '^FDGUARD_LIB=' | cut -d= -f1 || true
}

# check_option OPTION VALUE VARIABLE: both `OPTION VALUE` and `OPTION=VALUE`
# set VARIABLE=VALUE and no other FDGUARD_* variable.
check_option() {
	local opt=$1 value=$2 var=$3 form
	for form in split joined; do
		if [[ $form == split ]]; then
			fdg_env "$opt" "$value"
		else
			fdg_env "$opt=$value"
		fi
		if [[ $status -ne 0 ]]; then
			echo "$opt ($form) '$value': exit $status: $stderr"
			return 1
		fi
		has_var "$var" "$value"
		if [[ $(fdg_vars) != "$var" ]]; then
			echo "$opt set more than $var: $(fdg_vars | tr '\n' ' ')"
			return 1
		fi
	done
}

# check_bad OPTION VALUE HINT: both forms exit 2 with a message naming OPTION
# and containing HINT (the allowed values), then the run usage, on stderr.
# shellcheck disable=SC2154 # stderr_lines: set by bats' run --separate-stderr
check_bad() {
	local opt=$1 value=$2 hint=$3 form
	for form in split joined; do
		if [[ $form == split ]]; then
			run --separate-stderr "$FDG" run "$opt" "$value" -- env
		else
			run --separate-stderr "$FDG" run "$opt=$value" -- env
		fi
		if [[ $status -ne 2 ]]; then
			echo "$opt ($form) '$value': expected exit 2, got $status"
			return 1
		fi
		if [[ -n $output ]]; then
			echo "$opt ($form) '$value': the command ran or stdout was used: $output"
			return 1
		fi
		if [[ ${stderr_lines[0]} != "fdguard run: $opt"* || ${stderr_lines[0]} != *"$hint"* ]]; then
			echo "$opt ($form) '$value': first stderr line should name $opt and say '$hint':"
			echo "${stderr_lines[0]}"
			return 1
		fi
		if [[ $stderr != *"Usage: fdguard run "* ]]; then
			echo "$opt ($form) '$value': no usage on stderr"
			return 1
		fi
	done
}

# --- dispatcher ----------------------------------------------------------------

@test "--help, -h and help list the subcommands on stdout, exit 0" {
	local arg
	for arg in --help -h help; do
		run --separate-stderr "$FDG" "$arg"
		[ "$status" -eq 0 ]
		[ -z "$stderr" ]
		[[ ${lines[0]} == "Usage: fdguard SUBCOMMAND"* ]]
		[[ $output == *"Subcommands:"* ]]
		[[ $output == *"  run "* ]]
	done
}

@test "--version prints the version" {
	run --separate-stderr "$FDG" --version
	[ "$status" -eq 0 ]
	[[ $output =~ ^fdguard\ [0-9]+\.[0-9]+\.[0-9]+ ]]
}

@test "every listed subcommand answers --help and help SUBCOMMAND" {
	run --separate-stderr "$FDG" --help
	local subs sub
	subs=$(sed -n '/^Subcommands:/,/^$/{s/^  \([a-z][a-z-]*\) .*/\1/p}' <<<"$output")
	[[ $subs == *run* ]]
	for sub in $subs; do
		[[ $sub == help ]] && continue
		run --separate-stderr "$FDG" "$sub" --help
		[ "$status" -eq 0 ]
		[[ ${lines[0]} == "Usage: fdguard $sub"* ]]
		run --separate-stderr "$FDG" help "$sub"
		[ "$status" -eq 0 ]
		[[ ${lines[0]} == "Usage: fdguard $sub"* ]]
	done
}

@test "no subcommand: usage on stderr, exit 2" {
	run --separate-stderr "$FDG"
	[ "$status" -eq 2 ]
	[ -z "$output" ]
	[[ $stderr == *"Usage: fdguard SUBCOMMAND"* ]]
}

@test "unknown subcommand or top-level option: usage on stderr, exit 2" {
	run --separate-stderr "$FDG" frobnicate
	[ "$status" -eq 2 ]
	[ -z "$output" ]
	[[ ${stderr_lines[0]} == "fdguard: unknown subcommand: frobnicate" ]]
	[[ $stderr == *"Usage: fdguard SUBCOMMAND"* ]]

	run --separate-stderr "$FDG" help frobnicate
	[ "$status" -eq 2 ]
	[[ ${stderr_lines[0]} == *"unknown subcommand: frobnicate" ]]

	run --separate-stderr "$FDG" --frobnicate
	[ "$status" -eq 2 ]
	[[ ${stderr_lines[0]} == "fdguard: unknown option: --frobnicate" ]]
}

# --- run: usage --------------------------------------------------------------

@test "run --help and -h: run usage on stdout, exit 0, every option listed" {
	local arg opt
	for arg in --help -h; do
		run --separate-stderr "$FDG" run "$arg"
		[ "$status" -eq 0 ]
		[ -z "$stderr" ]
		[[ ${lines[0]} == "Usage: fdguard run [OPTIONS] -- CMD [ARGS...]" ]]
	done
	for opt in --on --off --only --accept --accept-errno --reject-msg --headroom --epoll \
		--epollexclusive --dlopen --dlopen-keep --dlopen-retries --backoff-max-ms --log \
		--log-level --stats; do
		[[ $output == *"  $opt "* || $output == *" $opt,"* || $output == *", $opt "* ]] ||
			{ echo "usage does not list $opt"; false; }
	done
}

@test "run --help after the command belongs to the command" {
	run --separate-stderr "$FDG" run -- printf '%s\n' --help
	[ "$status" -eq 0 ]
	[ "$output" = "--help" ]
}

# --- run: each option maps to its variable ----------------------------------

@test "--on and --off set FDGUARD" {
	fdg_env --off
	[ "$status" -eq 0 ]
	has_var FDGUARD off
	[ "$(fdg_vars)" = FDGUARD ]
	fdg_env --on
	has_var FDGUARD on
	fdg_env --on --off
	has_var FDGUARD off
}

@test "--only sets FDGUARD_ONLY" {
	check_option --only redis-server FDGUARD_ONLY
	check_option --only redis-server,nginx,my-daemon FDGUARD_ONLY
}

@test "--accept sets FDGUARD_ACCEPT" {
	check_option --accept on FDGUARD_ACCEPT
	check_option --accept off FDGUARD_ACCEPT
}

@test "--accept-errno sets FDGUARD_ACCEPT_ERRNO" {
	check_option --accept-errno EAGAIN FDGUARD_ACCEPT_ERRNO
	check_option --accept-errno EMFILE FDGUARD_ACCEPT_ERRNO
}

@test "--reject-msg sets FDGUARD_REJECT_MSG verbatim" {
	check_option --reject-msg 'HTTP/1.1 503 Service Unavailable\r\n\r\n' FDGUARD_REJECT_MSG
	check_option --reject-msg 'busy\tretry \\ later\x0A\x7f' FDGUARD_REJECT_MSG
	check_option --reject-msg '-ERR max clients reached\r\n' FDGUARD_REJECT_MSG
	# byte for byte, including an empty message and non-ASCII bytes
	local msg
	for msg in '' '  spaced  out  ' "$(printf 'caf\xc3\xa9 \xff')"; do
		run --separate-stderr "$FDG" run --reject-msg "$msg" -- printenv FDGUARD_REJECT_MSG
		[ "$status" -eq 0 ]
		[ "$output" = "$msg" ]
	done
}

@test "--headroom sets FDGUARD_HEADROOM" {
	check_option --headroom 0 FDGUARD_HEADROOM
	check_option --headroom 64 FDGUARD_HEADROOM
	check_option --headroom 1048576 FDGUARD_HEADROOM
}

@test "--epoll sets FDGUARD_EPOLL" {
	check_option --epoll on FDGUARD_EPOLL
	check_option --epoll off FDGUARD_EPOLL
}

@test "--epollexclusive sets FDGUARD_EPOLLEXCLUSIVE" {
	check_option --epollexclusive on FDGUARD_EPOLLEXCLUSIVE
	check_option --epollexclusive off FDGUARD_EPOLLEXCLUSIVE
}

@test "--dlopen sets FDGUARD_DLOPEN" {
	check_option --dlopen keep FDGUARD_DLOPEN
	check_option --dlopen cache FDGUARD_DLOPEN
	check_option --dlopen off FDGUARD_DLOPEN
}

@test "--dlopen-keep sets FDGUARD_DLOPEN_KEEP" {
	check_option --dlopen-keep 1 FDGUARD_DLOPEN_KEEP
	check_option --dlopen-keep 64 FDGUARD_DLOPEN_KEEP
	check_option --dlopen-keep 65536 FDGUARD_DLOPEN_KEEP
}

@test "--dlopen-retries sets FDGUARD_DLOPEN_RETRIES" {
	check_option --dlopen-retries 0 FDGUARD_DLOPEN_RETRIES
	check_option --dlopen-retries 100 FDGUARD_DLOPEN_RETRIES
}

@test "--backoff-max-ms sets FDGUARD_BACKOFF_MAX_MS" {
	check_option --backoff-max-ms 1 FDGUARD_BACKOFF_MAX_MS
	check_option --backoff-max-ms 60000 FDGUARD_BACKOFF_MAX_MS
}

@test "--log sets FDGUARD_LOG" {
	check_option --log stderr FDGUARD_LOG
	check_option --log syslog FDGUARD_LOG
	check_option --log /var/log/fdguard.log FDGUARD_LOG
}

@test "--log-level sets FDGUARD_LOG_LEVEL" {
	local level
	for level in quiet error warn info debug; do
		check_option --log-level "$level" FDGUARD_LOG_LEVEL
	done
}

@test "--stats sets FDGUARD_STATS, %p passed through" {
	check_option --stats /run/fdguard/stats.%p FDGUARD_STATS
	check_option --stats /tmp/fdg.stats FDGUARD_STATS
}

@test "all options together, the last of a repeated option wins" {
	fdg_env --off --only a,b --accept off --accept-errno EMFILE --reject-msg 'no\r\n' \
		--headroom 8 --epoll off --epollexclusive on --dlopen cache --dlopen-keep 2 \
		--dlopen-retries 0 --backoff-max-ms 5 --log syslog --log-level debug \
		--stats /tmp/s.%p --headroom=9
	[ "$status" -eq 0 ]
	has_var FDGUARD off
	has_var FDGUARD_ONLY a,b
	has_var FDGUARD_ACCEPT off
	has_var FDGUARD_ACCEPT_ERRNO EMFILE
	has_var FDGUARD_REJECT_MSG 'no\r\n'
	has_var FDGUARD_HEADROOM 9
	has_var FDGUARD_EPOLL off
	has_var FDGUARD_EPOLLEXCLUSIVE on
	has_var FDGUARD_DLOPEN cache
	has_var FDGUARD_DLOPEN_KEEP 2
	has_var FDGUARD_DLOPEN_RETRIES 0
	has_var FDGUARD_BACKOFF_MAX_MS 5
	has_var FDGUARD_LOG syslog
	has_var FDGUARD_LOG_LEVEL debug
	has_var FDGUARD_STATS /tmp/s.%p
	[ "$(fdg_vars | wc -l)" -eq 15 ]
}

@test "variables not given as options are left as the environment has them" {
	FDGUARD_ACCEPT=off FDGUARD_LOG_LEVEL=bogus FDGUARD_HEADROOM=5 fdg_env --epoll off
	[ "$status" -eq 0 ]
	has_var FDGUARD_ACCEPT off
	has_var FDGUARD_LOG_LEVEL bogus # the shim reports it, not fdguard run
	has_var FDGUARD_EPOLL off
	# an option overrides the environment
	FDGUARD_HEADROOM=5 fdg_env --headroom 7
	has_var FDGUARD_HEADROOM 7
	# and nothing is set when no option is given
	fdg_env
	[ "$status" -eq 0 ]
	[ -z "$(fdg_vars)" ]
}

# --- run: bad values ----------------------------------------------------------

@test "bad --only: exit 2" {
	local bad
	for bad in '' ',' 'a,' ',a' 'a,,b' /usr/sbin/nginx nginx,bin/redis; do
		check_bad --only "$bad" 'comma list of program names'
	done
}

@test "bad --accept / --epoll / --epollexclusive: exit 2" {
	local opt bad
	for opt in --accept --epoll --epollexclusive; do
		for bad in '' yes ON 1 'on '; do
			check_bad "$opt" "$bad" 'expected on, off'
		done
	done
}

@test "bad --accept-errno: exit 2" {
	local bad
	for bad in '' eagain EWOULDBLOCK ENFILE 11; do
		check_bad --accept-errno "$bad" 'expected EAGAIN, EMFILE'
	done
}

@test "bad --reject-msg escapes: exit 2" {
	local bad
	for bad in 'a\q' '\x4' 'x\x4g' 'x\xZZ' 'trailing\' '\0' '\e[0m' '\N'; do
		check_bad --reject-msg "$bad" 'escape'
	done
}

@test "--reject-msg at most 1024 bytes once decoded" {
	local kb
	kb=$(printf '%01024d' 0)
	check_option --reject-msg "$kb" FDGUARD_REJECT_MSG
	check_option --reject-msg "${kb:4}\x41\r\n\\\\" FDGUARD_REJECT_MSG
	check_bad --reject-msg "${kb}x" '1024'
	check_bad --reject-msg "${kb}\n" '1024'
}

@test "bad --headroom: exit 2" {
	local bad
	for bad in '' -1 +1 1048577 99999999999999999999 1e3 0x10 ' 1' 12abc; do
		check_bad --headroom "$bad" 'integer from 0 to 1048576'
	done
}

@test "bad --dlopen: exit 2" {
	local bad
	for bad in '' on KEEP cached none; do
		check_bad --dlopen "$bad" 'expected keep, cache, off'
	done
}

@test "bad --dlopen-keep / --dlopen-retries / --backoff-max-ms: exit 2" {
	local bad
	for bad in 0 65537 -1 x ''; do
		check_bad --dlopen-keep "$bad" 'integer from 1 to 65536'
	done
	for bad in 101 -1 1.5 ''; do
		check_bad --dlopen-retries "$bad" 'integer from 0 to 100'
	done
	for bad in 0 60001 -5 10ms ''; do
		check_bad --backoff-max-ms "$bad" 'integer from 1 to 60000'
	done
}

@test "bad --log / --log-level / --stats: exit 2" {
	local bad long
	for bad in '' file stderr2 SYSLOG ./fdguard.log log/fdguard.log; do
		check_bad --log "$bad" 'stderr, syslog or an absolute path'
	done
	for bad in '' WARN warning trace 3; do
		check_bad --log-level "$bad" 'expected quiet, error, warn, info, debug'
	done
	for bad in '' stats.%p ./stats ~user/stats; do
		check_bad --stats "$bad" 'absolute path'
	done
	long=/$(printf '%04095d' 0)
	check_bad --stats "$long" 'too long'
	check_bad --log "$long" 'too long'
}

@test "a value option without a value: exit 2" {
	run --separate-stderr "$FDG" run --accept
	[ "$status" -eq 2 ]
	[[ ${stderr_lines[0]} == "fdguard run: option --accept requires a value" ]]
	[[ $stderr == *"Usage: fdguard run "* ]]
	# `--accept -- env` takes "--" as the value, which is not on or off
	run --separate-stderr "$FDG" run --accept -- env
	[ "$status" -eq 2 ]
	[[ ${stderr_lines[0]} == "fdguard run: --accept: invalid value '--'"* ]]
}

@test "--on/--off take no value: exit 2" {
	run --separate-stderr "$FDG" run --off=yes -- env
	[ "$status" -eq 2 ]
	[[ ${stderr_lines[0]} == "fdguard run: option --off takes no value" ]]
}

@test "unknown option: exit 2" {
	local bad
	for bad in --nope --nope=1 -x --accept-errnos=EAGAIN --ON; do
		run --separate-stderr "$FDG" run "$bad" -- env
		[ "$status" -eq 2 ]
		[ -z "$output" ]
		[[ ${stderr_lines[0]} == "fdguard run: unknown option: ${bad%%=*}" ]]
		[[ $stderr == *"Usage: fdguard run "* ]]
	done
}

# --- run: the command ----------------------------------------------------------

@test "no command: exit 2" {
	local args
	for args in '' '--' '--accept off' '--accept off --'; do
		# shellcheck disable=SC2086 # split on purpose
		run --separate-stderr "$FDG" run $args
		[ "$status" -eq 2 ]
		[[ ${stderr_lines[0]} == "fdguard run: no command given" ]]
		[[ $stderr == *"Usage: fdguard run "* ]]
	done
}

@test "usage errors come before the library lookup" {
	FDGUARD_LIB=/nonexistent/libfdguard.so run --separate-stderr "$FDG" run --accept maybe -- env
	[ "$status" -eq 2 ]
	FDGUARD_LIB=/nonexistent/libfdguard.so run --separate-stderr "$FDG" run
	[ "$status" -eq 2 ]
}

@test "command not found: exit 127" {
	run -127 --separate-stderr "$FDG" run -- fdguard-no-such-command --x
	[ "$stderr" = "fdguard run: fdguard-no-such-command: command not found" ]
	run -127 --separate-stderr "$FDG" run -- /nonexistent/bin/server
	[ "$stderr" = "fdguard run: /nonexistent/bin/server: command not found" ]
	run -127 --separate-stderr "$FDG" run -- ''
	# a directory of that name in PATH is not a command
	mkdir -p "$BATS_TEST_TMPDIR/bin/fdguard-dir-cmd"
	PATH="$BATS_TEST_TMPDIR/bin:$PATH" run -127 --separate-stderr "$FDG" run -- fdguard-dir-cmd
	# without --, the first word is the command
	run -127 --separate-stderr "$FDG" run --accept off fdguard-no-such-command
}

@test "command found but not executable: exit 126" {
	mkdir -p "$BATS_TEST_TMPDIR/bin"
	printf '#!/bin/sh\necho hi\n' >"$BATS_TEST_TMPDIR/bin/noexec"
	chmod 644 "$BATS_TEST_TMPDIR/bin/noexec"
	run -126 --separate-stderr "$FDG" run -- "$BATS_TEST_TMPDIR/bin/noexec"
	[[ $stderr == "fdguard run: $BATS_TEST_TMPDIR/bin/noexec: permission denied"* ]]
	PATH="$BATS_TEST_TMPDIR/bin:$PATH" run -126 --separate-stderr "$FDG" run -- noexec
	[[ $stderr == "fdguard run: noexec: permission denied"* ]]
	run -126 --separate-stderr "$FDG" run -- "$BATS_TEST_TMPDIR/bin"
	# an executable of that name later in PATH wins, as in a shell
	mkdir -p "$BATS_TEST_TMPDIR/bin2"
	printf '#!/bin/sh\necho later\n' >"$BATS_TEST_TMPDIR/bin2/noexec"
	chmod 755 "$BATS_TEST_TMPDIR/bin2/noexec"
	PATH="$BATS_TEST_TMPDIR/bin:$BATS_TEST_TMPDIR/bin2:$PATH" run --separate-stderr "$FDG" run -- noexec
	[ "$status" -eq 0 ]
	[ "$output" = later ]
}

@test "the first non-option word starts the command, the rest is its own" {
	run --separate-stderr "$FDG" run --epoll off printf '%s\n' --accept off -h
	[ "$status" -eq 0 ]
	[ "${lines[0]}" = --accept ]
	[ "${lines[1]}" = off ]
	[ "${lines[2]}" = -h ]
	run --separate-stderr "$FDG" run --epoll off sh -c 'echo "${FDGUARD_EPOLL-unset} ${FDGUARD_ACCEPT-unset}"'
	[ "$output" = "off unset" ]
}

@test "arguments reach the command unchanged, its exit status is fdguard's" {
	run --separate-stderr "$FDG" run -- printf '[%s]\n' 'a b' '' '*' '$HOME' '--'
	[ "$status" -eq 0 ]
	[ "$output" = "$(printf '[%s]\n' 'a b' '' '*' '$HOME' '--')" ]
	run -3 --separate-stderr "$FDG" run -- sh -c 'exit 3'
}

@test "exec: the command keeps fdguard's pid" {
	# sh prints its pid and execs fdguard, which must exec the command in turn.
	run --separate-stderr sh -c 'echo $$; exec "$@"' sh "$FDG" run -- sh -c 'echo $$'
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 2 ]
	[ "${lines[0]}" = "${lines[1]}" ]
}

# --- run: LD_PRELOAD -------------------------------------------------------------

@test "LD_PRELOAD is the absolute library path when unset or empty" {
	run --separate-stderr "$FDG" run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$output" = "$FAKE_LIB" ]
	LD_PRELOAD='' run --separate-stderr "$FDG" run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$output" = "$FAKE_LIB" ]
}

@test "LD_PRELOAD: the library is prepended to an existing list" {
	LD_PRELOAD=/opt/other.so run --separate-stderr "$FDG" run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$output" = "$FAKE_LIB:/opt/other.so" ]
	LD_PRELOAD='/opt/a.so /opt/b.so' run --separate-stderr "$FDG" run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$output" = "$FAKE_LIB:/opt/a.so /opt/b.so" ]
}

@test "LD_PRELOAD: the library is not added twice" {
	local pre
	for pre in "$FAKE_LIB" "/opt/a.so:$FAKE_LIB" "/opt/a.so $FAKE_LIB /opt/b.so" "$FAKE_LIB:/opt/a.so"; do
		LD_PRELOAD=$pre run --separate-stderr "$FDG" run -- sh -c 'echo "$LD_PRELOAD"'
		[ "$output" = "$pre" ]
	done
	# the same file by another name counts as present
	ln -s "$FAKE_LIB" "$BATS_TEST_TMPDIR/alias.so"
	LD_PRELOAD=$BATS_TEST_TMPDIR/alias.so run --separate-stderr "$FDG" run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$output" = "$BATS_TEST_TMPDIR/alias.so" ]
	# running fdguard run under fdguard run changes nothing
	run --separate-stderr "$FDG" run -- "$FDG" run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$output" = "$FAKE_LIB" ]
}

# --- run: finding the library -----------------------------------------------------

@test "FDGUARD_LIB: relative path made absolute, missing file exit 1" {
	cd "$BATS_TEST_TMPDIR"
	FDGUARD_LIB=libfdguard.so run --separate-stderr "$FDG" run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$status" -eq 0 ]
	[ "$output" = "$FAKE_LIB" ]
	FDGUARD_LIB=/nonexistent/libfdguard.so run -1 --separate-stderr "$FDG" run -- true
	[[ $stderr == *"FDGUARD_LIB=/nonexistent/libfdguard.so: no such file"* ]]
}

@test "a library path with a space or colon cannot be preloaded: exit 1" {
	mkdir -p "$BATS_TEST_TMPDIR/a b" "$BATS_TEST_TMPDIR/c:d"
	: >"$BATS_TEST_TMPDIR/a b/libfdguard.so"
	: >"$BATS_TEST_TMPDIR/c:d/libfdguard.so"
	FDGUARD_LIB="$BATS_TEST_TMPDIR/a b/libfdguard.so" run -1 --separate-stderr "$FDG" run -- true
	[[ $stderr == *"space or a colon"* ]]
	FDGUARD_LIB="$BATS_TEST_TMPDIR/c:d/libfdguard.so" run -1 --separate-stderr "$FDG" run -- true
	[[ $stderr == *"space or a colon"* ]]
}

@test "library lookup: source tree, then make install layout, through symlinks" {
	unset FDGUARD_LIB
	local t=$BATS_TEST_TMPDIR
	# source tree: scripts/fdguard and build/libfdguard.so
	mkdir -p "$t/src/build"
	copy_fdguard "$t/src" src
	: >"$t/src/build/libfdguard.so"
	run --separate-stderr "$t/src/scripts/fdguard" run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$status" -eq 0 ]
	[ "$output" = "$t/src/build/libfdguard.so" ]
	# from another directory, by a relative path: still absolute
	cd "$t/src/build"
	run --separate-stderr ../scripts/fdguard run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$output" = "$t/src/build/libfdguard.so" ]
	# make install: PREFIX/bin/fdguard and PREFIX/lib/fdguard/libfdguard.so
	mkdir -p "$t/links"
	copy_fdguard "$t/prefix" prefix
	: >"$t/prefix/lib/fdguard/libfdguard.so"
	run --separate-stderr "$t/prefix/bin/fdguard" run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$output" = "$t/prefix/lib/fdguard/libfdguard.so" ]
	# a symlink to the script is resolved, found through PATH too
	ln -s "$t/prefix/bin/fdguard" "$t/links/fdguard"
	PATH="$t/links:$PATH" run --separate-stderr fdguard run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$output" = "$t/prefix/lib/fdguard/libfdguard.so" ]
	# FDGUARD_LIB still overrides
	FDGUARD_LIB=$FAKE_LIB run --separate-stderr "$t/prefix/bin/fdguard" run -- sh -c 'echo "$LD_PRELOAD"'
	[ "$output" = "$FAKE_LIB" ]
}

@test "library not found: clear error, exit 1" {
	unset FDGUARD_LIB
	copy_fdguard "$BATS_TEST_TMPDIR/lonely" prefix
	run -1 --separate-stderr "$BATS_TEST_TMPDIR/lonely/bin/fdguard" run -- true
	[ -z "$output" ]
	[[ $stderr == "fdguard run: libfdguard.so not found (run make"* ]]
	# an empty FDGUARD_LIB is the same as unset
	FDGUARD_LIB='' run -1 --separate-stderr "$BATS_TEST_TMPDIR/lonely/bin/fdguard" run -- true
	[[ $stderr == "fdguard run: libfdguard.so not found (run make"* ]]
}

# --- lint -------------------------------------------------------------------------

@test "shellcheck scripts/fdguard and its tool files pass" {
	need shellcheck
	run shellcheck -x "$FDG" "${FDG%/*}"/tools/*.bash
	[ "$status" -eq 0 ]
	[ -z "$output" ]
}
