#!/usr/bin/env bats
# Epoll hygiene: automatic EPOLL_CTL_DEL before close, dup2, dup3,
# close_range, closefrom and fclose take a registered number away (not when
# dup2 restores the same description, not in a thread with a private
# descriptor table); fork and vfork children leave their parent's
# registrations alone, and a parent leaves those a worker child uses (the
# fork rule); the opt-in EPOLLEXCLUSIVE for listeners; errno and results
# identical to glibc's. Each scenario of tests/helpers/epolltest.c runs
# without the shim (where it shows the stale registration: exit 1) and with
# it (exit 0). Exit 2 is a setup error, 3 a registration lost.
# The kernel's truth is /proc/self/fdinfo/EPFD, read by the helper.

bats_require_minimum_version 1.5.0

load lib

setup() {
	ET="$FDG_BIN/epolltest"
	[[ -x $ET ]] || fail "epolltest not built (make helpers)"
	PRELOAD=$(fdg_preload)
	local v
	for v in $(compgen -e FDGUARD); do
		unset "$v"
	done
	unset LD_PRELOAD
}

# bare ARGS...: runs epolltest without the shim (30 s watchdog: a hang is a
# failure with status 124, never a stuck suite).
bare() {
	run timeout -k 2 30 "$ET" "$@"
}

# shim ARGS...: the same under the shim. FDGUARD_* given as prefix
# assignments (FDGUARD_EPOLL=off shim seed) reach the program.
shim() {
	run timeout -k 2 30 env LD_PRELOAD="$PRELOAD" "$ET" "$@"
}

# expect STATUS: the last run exited STATUS; otherwise show its output.
expect() {
	if [[ $status -ne $1 ]]; then
		printf 'expected exit %s, got %s; output:\n%s\n' "$1" "$status" "$output"
		return 1
	fi
}

# field NAME: the number after "NAME " in the last run's output (epolltest
# prints "NAME N"; lib.bash's field reads NAME=VALUE).
field() {
	local re="$1 ([0-9.]+)"
	[[ $output =~ $re ]] && echo "${BASH_REMATCH[1]}"
}

# stale_then_clean SCENARIO: without the shim a stale registration, with it none.
stale_then_clean() {
	bare "$@"
	expect 1
	has "STALE"
	shim "$@"
	expect 0
	has "OK (stale registrations 0, stale events 0, lost registrations 0)"
	[[ $output != *STALE* && $output != *LOST* ]] || {
		echo "$output"
		return 1
	}
}

@test "seed: registered pipe, dup, close: stale event without the shim, none with it" {
	bare seed
	expect 1
	has "stale event: epoll_wait reported fd"
	has ", which is closed"
	shim seed
	expect 0
	has "seed: OK"
}

@test "FDGUARD_EPOLL=off (and FDGUARD=off) bring the stale event back" {
	FDGUARD_EPOLL=off shim seed
	expect 1
	has "stale event: epoll_wait reported fd"
	FDGUARD=off shim seed
	expect 1
	has "stale event: epoll_wait reported fd"
	FDGUARD_EPOLL=on shim seed
	expect 0
}

@test "dup2 onto a registered descriptor" {
	stale_then_clean dup2
}

@test "dup3 onto a registered descriptor" {
	stale_then_clean dup3
}

@test "close_range over registered descriptors (CLOSE_RANGE_CLOEXEC deletes nothing)" {
	stale_then_clean close_range
	has "close_range(CLOEXEC): OK"
}

@test "closefrom over registered descriptors" {
	stale_then_clean closefrom
}

@test "fclose of a registered stream" {
	stale_then_clean fclose
}

# dup2/dup3 of a saved duplicate back onto the registered number: the number
# never stops naming the registered file, so the registration stays (an
# event, EPOLL_CTL_MOD works), and a later close still deletes it.
dup_same() {
	bare "$@"
	expect 1
	has "1 event(s) for the restored number; EPOLL_CTL_MOD returned 0"
	has "(then closed): STALE"
	shim "$@"
	expect 0
	has "1 event(s) for the restored number; EPOLL_CTL_MOD returned 0"
	has "(then closed): OK"
}

@test "dup2 of a saved duplicate onto its registered number keeps the registration (pipe, socket)" {
	dup_same dup2_same
	dup_same dup2_same socket
}

@test "dup3 of a saved duplicate onto its registered number keeps the registration" {
	dup_same dup3_same
}

@test "without kcmp (seccomp), a socket is still recognised; a pipe is deleted, as before" {
	dup_same dup2_same socket nokcmp
	has "kcmp blocked (Operation not permitted)"
	# A pipe's two ends share an inode: without kcmp the shim cannot tell
	# them apart and deletes (the documented fallback).
	shim dup2_same nokcmp
	expect 3
	has "0 event(s); EPOLL_CTL_MOD returned -1, No such file or directory"
}

# A thread with a private descriptor table (close_range with
# CLOSE_RANGE_UNSHARE, unshare(CLONE_FILES)) closes nothing of the others'.
unshare_case() {
	local re='descriptors ([0-9]+) -> ([0-9]+)'
	bare "$1"
	expect 1
	has "the main thread got 1 event(s)"
	[[ $output =~ $re ]]
	((BASH_REMATCH[1] == BASH_REMATCH[2]))
	has "(main thread closes): STALE"
	shim "$1"
	expect 0
	has "the main thread got 1 event(s)"
	[[ $output =~ $re ]]
	((BASH_REMATCH[1] == BASH_REMATCH[2]))
	has "(main thread closes): OK"
}

@test "a thread's close_range(CLOSE_RANGE_UNSHARE) deletes nothing and leaks no spare" {
	unshare_case unshare_range
}

@test "a thread's closes after unshare(CLONE_FILES) delete nothing and leak no spare" {
	unshare_case unshare_close
}

@test "close_range(CLOSE_RANGE_UNSHARE) in a single-threaded process closes for real: deleted" {
	stale_then_clean unshare_single
}

@test "close(epfd) and the number reused by a new instance, dup2 over an instance" {
	stale_then_clean epfd_reuse
	has "epfd_reuse (new instance): OK"
	has "epfd_reuse (plain descriptor): OK"
}

@test "fork: children close the registered listener; the parent keeps its events and accepts" {
	local mode
	for mode in bare shim; do
		"$mode" fork_listener
		expect 0
		has "fork_listener (child close): the parent got the listener's event and accepted"
		has "fork_listener (child dup2): the parent got the listener's event and accepted"
		has "fork_listener (child close_range): the parent got the listener's event and accepted"
	done
}

# The fork rule (README, "Epoll hygiene in detail"): a registration made in
# an instance a child inherited is deleted on close only when the instance
# is this process's event loop (it waited on it) and no live process that
# inherited it uses it.

@test "fork: a pre-fork worker keeps the listener its parent registered and closed at once" {
	bare fork_worker
	expect 0
	has "fork_worker: the worker got the listener's event and accepted"
	shim fork_worker
	expect 0
	has "fork_worker: the worker got the listener's event and accepted"
}

@test "fork: a worker that used the instance keeps the listener when its parent (an event loop too) closes it" {
	bare fork_worker_waited
	expect 0
	has "the worker got the listener's event and accepted"
	shim fork_worker_waited
	expect 0
	has "the worker got the listener's event and accepted"
}

@test "fork: once the worker exited or closed the instance, the parent's close deletes again" {
	local how
	for how in exited closed; do
		stale_then_clean "fork_worker_$how"
	done
}

@test "fork: a server closes a client its background child still holds: no stale event in the server" {
	stale_then_clean fork_client
}

@test "fork: a server that never waited on the instance leaves a client's registration, as without the shim" {
	# The rule's cost, deliberate: the instance may be a worker's, not ours.
	bare fork_client_nowait
	expect 1
	has "stale event: epoll_wait reported fd"
	shim fork_client_nowait
	expect 1
	has "stale event: epoll_wait reported fd"
}

@test "fork: 600 workers (more than the old users page held) used the instance and left: the rule holds while one lives and after" {
	# A fresh process: no workers, the server's close deletes.
	bare fork_many 0
	expect 1
	shim fork_many 0
	expect 0
	has "the server's close deleted the registration"
	bare fork_many 600
	expect 1
	has "the server's close left the registration"
	has "stale event: epoll_wait reported fd"
	# The 600th worker's announcement is found while it lives; once all are
	# gone, the server's close deletes again, as in the fresh process.
	shim fork_many 600
	expect 0
	has "the server's close left the registration"
	has "fork_many: OK (stale registrations 0, stale events 0, lost registrations 0)"
}

@test "vfork + close_range in the child: registrations and the shim's records intact" {
	bare vfork_close_range
	expect 1
	has "vfork_close_range (after the child): OK"
	has "vfork_close_range (parent closes): STALE"
	shim vfork_close_range
	expect 0
	has "vfork_close_range (after the child): OK"
	has "vfork_close_range (parent closes): OK"
}

# An accepted socket whose close drops the last reference to its description
# needs no EPOLL_CTL_DEL: the kernel removes its registrations itself. Any
# other reference (a dup, a fork or spawned child, a message in flight with
# SCM_RIGHTS) keeps the registration alive: then the DEL is made.
@test "close of an accepted socket: no DEL when it is the last reference; a DEL after dup, fork, spawn, vfork, SCM_RIGHTS" {
	local how dels
	for how in none dup fork spawn vfork scm; do
		bare sole "$how"
		if [[ $how == none ]]; then expect 0; else expect 1; fi
		shim sole "$how"
		expect 0
		has "sole $how: OK"
		command -v strace >/dev/null && [[ -z ${FDG_SANITIZE:-} ]] || continue
		run timeout -k 2 30 strace -f -qq -e trace=epoll_ctl -o "$BATS_TEST_TMPDIR/$how" \
			env LD_PRELOAD="$PRELOAD" "$ET" sole "$how"
		expect 0
		dels=$(grep -c EPOLL_CTL_DEL "$BATS_TEST_TMPDIR/$how" || true)
		[[ $dels == "$([[ $how == none ]] && echo 0 || echo 1)" ]] || {
			echo "sole $how: $dels EPOLL_CTL_DEL calls"
			cat "$BATS_TEST_TMPDIR/$how"
			return 1
		}
	done
}

# Children that share the shim's memory (vfork, clone with CLONE_VM) or copy
# it without running the fork handlers (a raw fork system call, _Fork) close
# the registered number in their own table: the shim tells them apart
# without a system call (shim/owner.c), and they write nothing; posix_spawn's
# child reaches no wrapper at all. A shim that took them for the owner would
# delete the parent's registration (LOST) or forget its record (then the
# parent's close leaves it STALE).
@test "children in the shim's memory (vfork, clone CLONE_VM, raw fork, _Fork, posix_spawn) leave registrations and records intact" {
	local kind kinds=(vfork clone_vfork clone_vm raw_fork _Fork posix_spawn)
	# TSan's runtime cannot run in a CLONE_VM child that is not a thread it
	# made (the child faults inside the runtime, shim or not).
	[[ ${FDG_SANITIZE:-} != thread ]] || kinds=("${kinds[@]/clone_vm/}")
	for kind in "${kinds[@]}"; do
		[[ -n $kind ]] || continue
		bare share_child "$kind"
		expect 1
		has "share_child $kind (after the child): OK"
		has "share_child $kind (parent closes): STALE"
		shim share_child "$kind"
		expect 0
		has "share_child $kind (after the child): OK"
		has "share_child $kind (parent closes): OK"
	done
}

@test "Python's subprocess (vfork, close_range in the child through the wrappers): the parent's registration and record intact" {
	local py=/usr/bin/python3
	[[ -x $py ]] || skip "no $py"
	# TSan's vfork interceptor makes a fork: the premise is gone.
	[[ ${FDG_SANITIZE:-} != thread ]] || skip "TSan turns vfork into fork"
	local script='
import os, select, subprocess
ep = select.epoll()
r, w = os.pipe()
ep.register(r, select.EPOLLIN)
keep = os.dup(r)
def tfds():
    with open(f"/proc/self/fdinfo/{ep.fileno()}") as f:
        return sorted(int(l.split()[1]) for l in f if l.startswith("tfd:"))
subprocess.run(["true"], close_fds=True, check=True)
child = "intact" if tfds() == [r] else f"changed {tfds()}"
os.close(r)
print("after the child:", child, "| after the close:", "deleted" if tfds() == [] else
      "stale" if tfds() == [r] else f"changed {tfds()}")
'
	run timeout -k 2 30 "$py" -c "$script"
	[[ $status -eq 0 && $output == "after the child: intact | after the close: stale" ]] || {
		echo "without the shim: $output"
		return 1
	}
	run timeout -k 2 30 env LD_PRELOAD="$PRELOAD" "$py" -c "$script"
	[[ $status -eq 0 && $output == "after the child: intact | after the close: deleted" ]] || {
		echo "with the shim: $output"
		return 1
	}
	# It was a vfork child, and its close_range went through the wrapper.
	if command -v strace >/dev/null && [[ -z ${FDG_SANITIZE:-} ]]; then
		run timeout -k 2 30 strace -f -qq -e trace=vfork,close_range env LD_PRELOAD="$PRELOAD" "$py" -c "$script"
		[[ $output == *"vfork("* && $output == *"close_range("* ]] || {
			echo "$output"
			return 1
		}
	fi
}

# 4 seeds x 5000 steps of ADD, MOD, DEL, dup/F_DUPFD, dup2, dup3 (also of a
# saved duplicate back onto its number), close, close_range,
# fork-and-close-in-child, pre-fork workers that wait on an inherited
# instance, threads that close in a private table, vfork-and-close_range,
# creation, duplication and close of epoll fds, accepted sockets (registered
# at once, mostly), SCM_RIGHTS sends (sendmsg, sendmmsg) that stay in flight
# and their receipt, children spawned (posix_spawn, vfork + exec) that hold
# what is not close-on-exec, checked against
# /proc/self/fdinfo after every step. The program waits on three instances
# in four (its event loops) and hands the others to children; what the fork
# rule leaves in place is allowed, not required. Sanitizer builds fork
# slowly (some 25 ms a fork under TSan): they run a shorter walk, for the
# sanitizer's findings, not for coverage.
if [[ -n ${FDG_SANITIZE:-} ]]; then
	MODEL_SEEDS="11 23"
	MODEL_STEPS=1000
	MODEL_MIN=2000
else
	MODEL_SEEDS="11 23 37 101"
	MODEL_STEPS=5000
	MODEL_MIN=20000
fi

# walk shim|bare SEED: one model walk. The walk depends on the numbers the
# program starts with: from 0-2 only (exec_clean), a seed walks the same in
# CI as in a shell, where `epolltest model SEED STEPS -v` shows its steps.
walk() {
	local pre=()
	[[ $1 == shim ]] && pre=(LD_PRELOAD="$PRELOAD")
	run exec_clean timeout -k 2 30 env "${pre[@]}" "$ET" model "$2" "$MODEL_STEPS"
}

@test "model: random operations against the kernel's truth, zero mismatches with the shim" {
	local seed steps=0 bad=0 risky=0 kept=0 same=0 unshared=0 sole=0 held=0
	for seed in $MODEL_SEEDS; do
		walk shim "$seed"
		expect 0
		has "mismatches 0 (stale 0, lost 0)"
		steps=$((steps + $(field steps)))
		bad=$((bad + $(field mismatches)))
		risky=$((risky + $(field shared:)))
		kept=$((kept + $(field "fork rule:")))
		same=$((same + $(field "duplicate:")))
		unshared=$((unshared + $(field "private table:")))
		sole=$((sole + $(field "closed sole:")))
		held=$((held + $(field "held elsewhere:")))
	done
	((steps >= MODEL_MIN))
	# The situations did arise: stale registrations to prevent, registrations
	# the fork rule keeps, numbers restored from a duplicate, private tables,
	# accepted sockets closed as their last reference (no DEL needed) and
	# registered sockets closed while a dup, a child, a worker or a message
	# in flight may hold them (a DEL needed).
	((risky > 0 && kept > 0 && same > 0 && unshared > 0 && sole > 0 && held > 0))
	echo "# model with the shim: $steps steps, $bad mismatches ($risky registered numbers closed while shared," \
		"$kept kept by the fork rule, $same restored from a duplicate, $unshared private-table threads," \
		"$sole accepted sockets closed sole, $held registered sockets closed while maybe held elsewhere)" >&3
}

@test "model: the same steps find mismatches without the shim" {
	local seed steps=0 bad=0 n
	for seed in $MODEL_SEEDS; do
		walk bare "$seed"
		expect 1
		has "lost 0)"
		n=$(field mismatches)
		((n > 0))
		steps=$((steps + $(field steps)))
		bad=$((bad + n))
	done
	echo "# model without the shim: $steps steps, $bad mismatches" >&3
}

@test "threads register, close, dup2, dup3 and close_range concurrently" {
	bare threads 4 300
	expect 1
	shim threads 4 300
	expect 0
	has "stale entries seen in the threads' own instances 0; stale entries in the shared instance 0"
}

# signal_storm kill|itimer: the main thread loops in epoll_ctl ADD/MOD/DEL for
# 300 ms while a handler closes registered descriptors. It must finish (the
# 30 s watchdog turns a deadlock into status 124), signals must have landed
# inside epoll_ctl, and the shim's records must still be right afterwards.
signal_storm() {
	local re='\(([0-9]+) inside epoll_ctl\)'
	bare signal "$1" 300
	expect 1
	has "after closing the pool with duplicates held"
	shim signal "$1" 300
	expect 0
	has "after closing the pool with duplicates held: 0 stale registrations"
	[[ $output =~ $re ]] && ((BASH_REMATCH[1] > 0)) || {
		echo "no signal arrived inside epoll_ctl: $output"
		return 1
	}
	echo "# ${output%%$'\n'*}" >&3
}

@test "a signal handler closes registered fds while the main thread is in epoll_ctl (pthread_kill)" {
	signal_storm kill
}

@test "a signal handler closes registered fds while the main thread is in epoll_ctl (setitimer)" {
	signal_storm itimer
}

@test "EPOLLEXCLUSIVE: one wake-up per connection with FDGUARD_EPOLLEXCLUSIVE=on, the herd without" {
	local without default with
	bare exclusive 4 40
	expect 1
	has "EPOLLEXCLUSIVE not set"
	without=$(field "wake-ups,")
	shim exclusive 4 40 # the option is off by default
	expect 1
	default=$(field "wake-ups,")
	FDGUARD_EPOLLEXCLUSIVE=on shim exclusive 4 40
	expect 0
	has "EPOLLEXCLUSIVE set"
	with=$(field "wake-ups,")
	echo "# wake-ups per connection, 4 threads: without the shim $without, shim default $default, FDGUARD_EPOLLEXCLUSIVE=on $with" >&3
	# The herd: most of the 4 threads wake for every connection.
	awk -v w="$without" -v d="$default" -v x="$with" 'BEGIN { exit !(w >= 2.5 && d >= 2.5 && x <= 1.5) }'
}

@test "EPOLLEXCLUSIVE: MOD of a registration the shim made exclusive works; an app's own fails" {
	FDGUARD_EPOLLEXCLUSIVE=on shim exclusive_mod
	expect 0
	has "after ADD: events 0x10000019 data 1, EPOLLEXCLUSIVE set"
	has "OK (MOD returned 0 and took effect)"
	bare exclusive_mod
	expect 0
	has "EPOLLEXCLUSIVE not set"
	# Why the emulation exists: the kernel refuses MOD of an exclusive
	# registration, so the shim does DEL + ADD for the ones it made.
	bare exclusive_mod app
	expect 1
	has "EPOLL_CTL_MOD failed: Invalid argument"
	FDGUARD_EPOLLEXCLUSIVE=on shim exclusive_mod app
	expect 1
	has "EPOLL_CTL_MOD failed: Invalid argument"
}

@test "EPOLLEXCLUSIVE with FDGUARD_EPOLL=off: MOD still works" {
	FDGUARD_EPOLL=off FDGUARD_EPOLLEXCLUSIVE=on shim exclusive_mod
	expect 0
	has "OK (MOD returned 0 and took effect)"
}

# same_but_exclusive SCENARIO: the scenario's output with
# FDGUARD_EPOLLEXCLUSIVE=on is the bare run's, line for line, except that
# the shim made the listener's registration exclusive.
same_but_exclusive() {
	local d="$BATS_TEST_TMPDIR"
	bare "$1"
	expect 0
	has "EPOLLEXCLUSIVE not set"
	printf 'exit %s\n%s\n' "$status" "$output" >"$d/bare"
	FDGUARD_EPOLLEXCLUSIVE=on shim "$1"
	printf 'exit %s\n%s\n' "$status" "$output" >"$d/shim"
	grep -q 'EPOLLEXCLUSIVE set$' "$d/shim" || {
		cat "$d/shim"
		return 1
	}
	diff -u "$d/bare" <(sed 's/EPOLLEXCLUSIVE set$/EPOLLEXCLUSIVE not set/' "$d/shim")
}

@test "EPOLLEXCLUSIVE: ADD and MOD with a bad event pointer: EFAULT as without the shim, the registration stays" {
	same_but_exclusive exclusive_fault
	has "exclusive_fault: MOD (PROT_NONE page): ret -1 errno EFAULT"
	has "exclusive_fault: after the bad MODs: 1 registration(s), data 1"
}

@test "EPOLLEXCLUSIVE refused by the kernel: ADD and the emulated MOD succeed with errno untouched" {
	same_but_exclusive exclusive_refused
	has "exclusive_refused: ADD: ret 0 errno untouched"
	has "exclusive_refused: MOD: ret 0 errno untouched"
}

@test "dup2, dup3 and close_range that fail keep the registration of the number they name" {
	bare failed_close
	expect 0
	shim failed_close
	expect 0
}

@test "an epoll fd moved to another number (F_DUPFD + close) keeps its registrations tracked" {
	stale_then_clean epfd_move
}

@test "EPOLLEXCLUSIVE: MOD works with more than 48 instances, alive or over time" {
	bare exclusive_many
	expect 0
	FDGUARD_EPOLLEXCLUSIVE=on shim exclusive_many
	expect 0
	FDGUARD_EPOLL=off FDGUARD_EPOLLEXCLUSIVE=on shim exclusive_many
	expect 0
}

# errnotest: every wrapper of the close, dup and epoll families (fclose of
# memory streams, fork children using an inherited instance included), on
# success and on failure, with errno preset to a sentinel: return and errno
# must be the same line for line without the shim, with it, with
# FDGUARD=off, with FDGUARD_EPOLL=off and with FDGUARD_EPOLLEXCLUSIVE=on.
@test "errno and return values of every wrapper are the real call's (on, off, FDGUARD_EPOLL=off, FDGUARD_EPOLLEXCLUSIVE=on)" {
	local ER="$FDG_BIN/errnotest" d="$BATS_TEST_TMPDIR"
	run timeout -k 2 30 "$ER"
	[[ $status -eq 0 ]] || {
		echo "$output"
		return 1
	}
	printf 'exit %s\n%s\n' "$status" "$output" >"$d/bare"
	# (ThreadSanitizer's own fclose interceptor leaves EBADF after a memory
	# stream: under it only the comparison holds.)
	[[ -n ${FDG_SANITIZE:-} ]] || grep -q '^fclose (open_memstream) .* errno untouched$' "$d/bare"
	grep -q '^close (registration a live child uses) ' "$d/bare"
	local mode
	for mode in on off epoll-off exclusive; do
		case $mode in
		on) run timeout -k 2 30 env LD_PRELOAD="$PRELOAD" "$ER" ;;
		off) run timeout -k 2 30 env FDGUARD=off LD_PRELOAD="$PRELOAD" "$ER" ;;
		epoll-off) run timeout -k 2 30 env FDGUARD_EPOLL=off LD_PRELOAD="$PRELOAD" "$ER" ;;
		exclusive) run timeout -k 2 30 env FDGUARD_EPOLLEXCLUSIVE=on LD_PRELOAD="$PRELOAD" "$ER" ;;
		esac
		printf 'exit %s\n%s\n' "$status" "$output" >"$d/$mode"
		diff -u "$d/bare" "$d/$mode" || {
			echo "errno or result differs from glibc's with the shim ($mode)"
			return 1
		}
	done
	echo "# errnotest: $(grep -c ' ret ' "$d/bare") calls, the same return and errno without the shim, on, off, FDGUARD_EPOLL=off and FDGUARD_EPOLLEXCLUSIVE=on" >&3
}

# trace MODE FILE: the system calls errnotest makes between its two
# getppid() markers (one process: nofork), addresses and pids masked.
trace() {
	local mode=$1 out=$2
	local -a env=()
	case $mode in
	bare) ;;
	off) env=(FDGUARD=off LD_PRELOAD="$PRELOAD") ;;
	on) env=(LD_PRELOAD="$PRELOAD") ;;
	esac
	timeout -k 2 30 strace -qq -o "$out.raw" env "${env[@]}" "$FDG_BIN/errnotest" nofork >/dev/null
	sed -n '/^getppid(/,/^getppid(/p' "$out.raw" | sed -E 's/0x[0-9a-f]+/0x_/g; s/= [0-9]+$/= N/' >"$out"
	[[ -s $out ]]
}

@test "FDGUARD=off: the wrappers make exactly the system calls glibc makes, nothing more" {
	need strace
	[[ -z ${FDG_SANITIZE:-} ]] || skip "sanitizer runtimes make their own system calls"
	local d="$BATS_TEST_TMPDIR"
	trace bare "$d/bare"
	trace off "$d/off"
	diff -u "$d/bare" "$d/off"
	# The comparison sees the shim's work when it is on (the DELs, the
	# table's memory): it would see it under FDGUARD=off too.
	trace on "$d/on"
	run -1 diff -q "$d/bare" "$d/on"
	# errnotest deletes registrations itself: the shim's own DELs come on top.
	local dels_bare dels_on
	dels_bare=$(grep -c 'EPOLL_CTL_DEL' "$d/bare")
	dels_on=$(grep -c 'EPOLL_CTL_DEL' "$d/on")
	echo "EPOLL_CTL_DEL: $dels_bare without the shim, $dels_on with it"
	((dels_on > dels_bare))
	echo "# FDGUARD=off: $(wc -l <"$d/off") system calls, identical to glibc's; with the shim on: $(wc -l <"$d/on")" >&3
}
