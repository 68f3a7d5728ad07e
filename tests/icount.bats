#!/usr/bin/env bats
# The user-space instructions the shim adds to the calls every server makes
# all the time, counted by callgrind (tests/bench/icount.c): a process that
# has registered a pipe and waited on its instance, each call made 10,000
# times without and with the shim, the difference per call. The count is
# deterministic (the same binary, library and case execute the same
# instructions), so unlike a time ratio it can fail CI on a regression.
# README, "Benchmarks", has the figures; make bench shows them side by side.

load lib

setup() {
	IC=$FDG_BUILD/bench/icount
	[[ -z ${FDG_SANITIZE:-} ]] || skip "a sanitizer runtime adds its own instructions"
	[[ -x $IC ]] || fail "$IC missing: make test builds it"
	need valgrind # .ci/run installs it: under CI a missing valgrind fails
}

# added CASE CEILING: the shim adds at most CEILING instructions per call.
added() {
	run timeout -k 2 120 "$IC" -m "$FDG_LIB" "$1"
	echo "$output"
	[[ $status -eq 0 ]]
	local re="^$1 without ([0-9.]+) with ([0-9.]+) added (-?[0-9.]+)$"
	[[ $output =~ $re ]]
	echo "# $1: ${BASH_REMATCH[1]} -> ${BASH_REMATCH[2]} instructions per call (+${BASH_REMATCH[3]}, at most $2)" >&3
	awk -v a="${BASH_REMATCH[3]}" -v c="$2" 'BEGIN { exit !(a <= c) }'
}

@test "close of an untracked fd: at most 12 instructions added" {
	added close 12
}

@test "dup of an untracked fd: at most 12 instructions added" {
	added dup 12
}

@test "dup2 onto an untracked number: at most 12 instructions added" {
	added dup2 12
}

@test "epoll_ctl(EPOLL_CTL_MOD) of a registration: at most 12 instructions added" {
	added mod 12
}

@test "epoll_wait on an instance already waited on: at most 12 instructions added" {
	added wait 12
}

# The slow paths: each also makes a system call (the DEL), so these ceilings
# only catch a regression (measured 186 and 343 on glibc 2.36, gcc 12).
@test "close of a registered fd whose description is shared: at most 240 instructions added (beside the DEL)" {
	added close_reg 240
}

@test "EPOLL_CTL_ADD + EPOLL_CTL_DEL: at most 430 instructions added" {
	added addel 430
}
