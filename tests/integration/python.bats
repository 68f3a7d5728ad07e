#!/usr/bin/env bats
# Python services at descriptor exhaustion, without and with the shim:
#   - python3 -m http.server (socketserver: a selector loop polls the blocking
#     listener, then accept(); on EMFILE it returns to the loop, which finds
#     the listener readable again at once);
#   - a small asyncio server (asyncio.start_server: non-blocking listener in
#     an epoll loop; on EMFILE asyncio stops reading the listener for a second
#     and tries again).
# Shed clients must get an HTTP 503 within FAST_MS (FDGUARD_REJECT_MSG), the
# client connected before the exhaustion must still get an answer, and once
# the limit is raised curl must get 200.

load ../lib
load common

HTTP_503='HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n'
GET='GET / HTTP/1.0\r\n\r\n'

setup() {
    it_setup
    need "$PY" curl
}

teardown() {
    it_teardown
}

# curl_code PORT [MAX_S]: "CODE SECONDS" of a GET / (code 000: no answer).
curl_code() {
    curl -s -o /dev/null -m "${2:-2}" -w '%{http_code} %{time_total}' "http://127.0.0.1:$1/" || true
}

http_ready() {
    [[ $(curl_code "$1") == 200\ * ]]
}

http_server_up() {
    mkdir -p "$T/www"
    echo hello >"$T/www/index.html"
    up http.server "$1" http_ready "$PY" -m http.server --bind 127.0.0.1 --directory "$T/www" @PORT@
}

asyncio_up() {
    cat >"$T/aio.py" <<'EOF'
import asyncio
import sys


async def handle(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))
EOF
    up asyncio "$1" http_ready "$PY" "$T/aio.py" @PORT@
}

# exhaustion MODE SERVER: SERVER is http_server or asyncio.
exhaustion() {
    local mode=$1 server=$2 h1 ticks during after held code secs
    if [[ $mode == shim ]]; then
        SRV_ENV+=("FDGUARD_REJECT_MSG=$HTTP_503")
    fi
    "${server}_up" "$mode"
    hold h1 # connected, request not sent yet
    exhaust

    clients NEW 5 --send "$GET" --reject 'HTTP/1.0 503' --wait-ms 300
    during=$(curl_code "$PORT" 1)
    echo "curl at exhaustion: $during"
    ticks=$(cpu_over "$PID" 2)
    echo "$server CPU over 2 s at exhaustion: $ticks ticks"

    # The client connected before gets an answer (http.server cannot open
    # index.html without a descriptor and says 404; asyncio needs none).
    held=$(ask "$h1" "$GET")
    echo "held client: $held"
    [[ $held =~ ^HTTP/1\.[01]\ [0-9]{3} ]]
    if [[ $server == asyncio ]]; then
        [[ $held == 'HTTP/1.0 200 OK' ]]
    fi

    if [[ $mode == plain ]]; then
        [[ $(get hanging NEW) == 5 ]]
        [[ $during == 000\ * ]]
        if [[ $server == http_server ]]; then
            ((ticks > SPIN_TICKS))
        fi
    else
        [[ $(get rejected NEW) == 5 ]]
        grep -qx 'rejected-text: HTTP/1.0 503 Service Unavailable' "$T/NEW.out"
        below "$(get answer_ms_max NEW)" "$FAST_MS"
        read -r code secs <<<"$during"
        [[ $code == 503 ]]
        below "$(awk -v s="$secs" 'BEGIN { print s * 1000 }')" "$FAST_MS"
        ((ticks <= CALM_TICKS))
    fi

    # Room again: curl gets 200.
    set_nofile "$PID" $((LIMIT + 64))
    wait_until "http_ready $PORT" 5
    after=$(curl_code "$PORT")
    [[ $after == 200\ * ]]

    if [[ $mode == plain ]]; then
        note "$server without the shim: ${ticks} ticks over 2 s at exhaustion; new clients $(get hanging NEW)/5 hanging" \
            "after 300 ms; curl: '$during' (no answer in 1 s); held client: '$held'; limit raised: curl $after"
    else
        note "$server with the shim: ${ticks} ticks over 2 s at exhaustion; new clients $(get rejected NEW)/5 read 503" \
            "(p50 $(get answer_ms_p50 NEW) ms, max $(get answer_ms_max NEW) ms); curl: '$during';" \
            "held client: '$held'; limit raised: curl $after"
    fi
}

@test "http.server without the shim: EMFILE spins the serve_forever loop, new clients hang" {
    exhaustion plain http_server
}

@test "http.server with the shim: shed clients get 503 fast, no spin, held client answered, 200 after the limit is raised" {
    exhaustion shim http_server
}

@test "asyncio without the shim: EMFILE pauses accepting, new clients hang" {
    exhaustion plain asyncio
}

@test "asyncio with the shim: shed clients get 503 fast, no spin, held client served, 200 after the limit is raised" {
    exhaustion shim asyncio
}

# With FDGUARD_LOG naming a file, the file must be open before the table
# fills, or its first line (written while shedding) takes the slot the shed
# connection just freed, and the spare can never be re-armed at exhaustion.
@test "http.server with the shim and FDGUARD_LOG=FILE: every shed client answered, the line in the file" {
    SRV_ENV+=("FDGUARD_REJECT_MSG=$HTTP_503" "FDGUARD_LOG=$T/fdguard.log")
    http_server_up shim
    exhaust
    clients NEW1 5 --send "$GET" --reject 'HTTP/1.0 503' --wait-ms 300
    clients NEW2 5 --send "$GET" --reject 'HTTP/1.0 503' --wait-ms 300
    echo "descriptors: $(fd_list "$PID")"
    [[ $(get rejected NEW1) == 5 ]]
    [[ $(get rejected NEW2) == 5 ]]
    grep -q 'shed a pending connection' "$T/fdguard.log"
}
