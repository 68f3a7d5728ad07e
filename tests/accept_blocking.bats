#!/usr/bin/env bats
# A blocking accept at the descriptor limit keeps the real call's timeout,
# signal and cancellation behaviour under the shim (tests/helpers/blockaccept.c).
# Without the shim the real call fails at once with EMFILE and the pending
# client is left in the backlog.

load lib
bats_require_minimum_version 1.5.0

setup() {
    BA=$FDG_BIN/blockaccept
    [[ -x $BA ]] || skip "blockaccept not built (make helpers)"
}

bare() { run -0 "$BA" "$1"; echo "without: $output"; }
shim() { run -0 env LD_PRELOAD="$(fdg_preload)" "$BA" "$1"; echo "with: $output"; }
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$output" | head -n 1; }

@test "blocking accept: SO_RCVTIMEO still ends the wait with EAGAIN; a client arriving meanwhile is shed" {
    bare rcvtimeo
    [[ $(field result) == EMFILE && $(field client) == open ]]
    shim rcvtimeo
    [[ $(field result) == EAGAIN && $(field client) == eof ]]
    # 300 ms, restarted once after the shed at ~100 ms: under a second in all.
    (($(field after_ms) >= 250 && $(field after_ms) < 1000))
}

@test "blocking accept: a signal without SA_RESTART ends the wait with EINTR" {
    bare eintr
    [[ $(field result) == EMFILE ]]
    shim eintr
    [[ $(field result) == EINTR && $(field client) == eof ]]
    (($(field after_ms) >= 250 && $(field after_ms) < 1000))
}

@test "blocking accept: a cancelled acceptor leaves the relief working for the next one" {
    bare cancel
    [[ $(field result) == EMFILE && $(field client) == open ]]
    shim cancel
    [[ $(field result) == CANCELED ]]
    # The second (non-blocking) accept sheds its client: the lend token and
    # the spare survived the cancelled thread.
    [[ ${lines[-1]} == "second=EAGAIN client=eof" ]]
}
