#!/usr/bin/env bash
# The server API with nothing but curl: publish, history, call, disconnect.
#
# Run it against a server started with an API key, for instance
#
#     twistd -n graphsse --port 8080 --channels news --history 100 --api-key KEY
#     bash examples/api_curl.sh http://127.0.0.1:8080/api KEY
#
# The URL and the key may come from GRAPHSSE_URL and GRAPHSSE_API_KEY
# instead (which keeps the key out of ps); the channel is the third
# argument or GRAPHSSE_CHANNEL ("news" by default), and the stream's URL
# GRAPHSSE_SSE_URL (the API's URL with /api replaced by /sse).
#
# It plays both sides: a client that opens a stream (as a browser would)
# and answers the route the backend calls on it, and the backend that
# publishes, reads the channel's history, calls that route, and ends the
# stream.  Each step prints one line, "STEP STATUS ANSWER" (the status is
# "-" for the stream's end, the answer its last event), and the walk
# stops (exit 1) at the first answer that is not what it should be.
set -euo pipefail

api=${1:-${GRAPHSSE_URL:-http://127.0.0.1:8080/api}}
key=${2:-${GRAPHSSE_API_KEY:-}}
channel=${3:-${GRAPHSSE_CHANNEL:-news}}
api=${api%/}
sse=${GRAPHSSE_SSE_URL:-${api%/api}/sse}
if [ -z "$key" ]; then
    echo "usage: $0 API_URL KEY [CHANNEL] (or GRAPHSSE_URL, GRAPHSSE_API_KEY)" >&2
    exit 2
fi

work=$(mktemp -d)
stream_pid=
cleanup() {
    if [ -n "$stream_pid" ]; then kill "$stream_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The key goes in a header file, not on curl's command line.
umask 077
printf 'Authorization: apikey %s\n' "$key" >"$work/auth"

fail() {
    echo "$*" >&2
    exit 1
}

# step NAME METHOD PATH [BODY]: call the API, print "NAME STATUS ANSWER",
# and leave the answer in $answer; fail unless the status is 200.
step() {
    local name=$1 method=$2 path=$3 body=${4-} status
    local args=(-sS -X "$method" -H @"$work/auth" -o "$work/answer" -w '%{http_code}')
    if [ -n "$body" ]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$body")
    fi
    status=$(curl "${args[@]}" "$api/$path")
    answer=$(cat "$work/answer")
    echo "$name $status $answer"
    [ "$status" = 200 ] || fail "$name: expected 200, got $status"
}

# wait_for PATTERN FILE: wait (up to 10 s) until FILE has a line matching
# the extended regular expression PATTERN.
wait_for() {
    local tries=0
    until grep -Eq "$1" "$2" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -le 200 ] || fail "timed out waiting for /$1/ in $2"
        sleep 0.05
    done
}

# 1. A client's stream on the channel; the server's first message names
#    its session.
curl -sSN -H 'Accept: text/event-stream' "$sse?channels=$channel" >"$work/stream" &
stream_pid=$!
wait_for '"route":"setId"' "$work/stream"
session=$(sed -n 's/.*"route":"setId","args":"\([^"]*\)".*/\1/p' "$work/stream" | head -n 1)
echo "stream 200 {\"session\":\"$session\"}"

# 2. Publish an event on the channel; the answer is its id.
step publish POST publish "{\"channel\":\"$channel\",\"data\":{\"n\":1,\"from\":\"curl\"}}"
id=$(printf '%s' "$answer" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
[ -n "$id" ] || fail "publish: no id (does the channel keep history? --history N)"
wait_for '"from":"curl"' "$work/stream"

# 3. The channel's history holds it.
step history GET "history?channel=$channel"
case $answer in *"\"id\":\"$id\""*) ;; *) fail "history: $id is not in it" ;; esac

# 4. Call the client's route "add" with [2, 3].  The call waits for the
#    client, so it runs in the background while the client (curl again)
#    reads the request off its stream and POSTs its answer back, quoting
#    the request's callbackId.
step call POST call "{\"session\":\"$session\",\"route\":\"add\",\"args\":[2,3],\"timeout\":10}" \
    >"$work/call" &
call_pid=$!
wait_for '"route":"runRequest"' "$work/stream"
callback=$(sed -n 's/.*"route":"runRequest".*,"\([^"]*\)","'"$session"'"\]}.*/\1/p' \
    "$work/stream" | head -n 1)
[ -n "$callback" ] || fail "call: no callbackId in the request"
curl -sS -o /dev/null -H 'Content-Type: application/json' \
    --data-binary "{\"args\":$((2 + 3)),\"callbackId\":\"$callback\",\"sessionId\":\"$session\"}" \
    "$sse"
wait "$call_pid" || fail "call: $(cat "$work/call")"
cat "$work/call"
grep -q '{"result":5}' "$work/call" || fail "call: expected the result 5"

# 5. End the client's stream: it gets a last "disconnected" event, and ends.
step disconnect POST disconnect "{\"session\":\"$session\"}"
[ "$answer" = '{"disconnected":1}' ] || fail "disconnect: expected 1 stream"
wait "$stream_pid" || true
stream_pid=
last=$(grep -o '{"route":"disconnected"[^}]*}' "$work/stream") ||
    fail "the stream did not end with a disconnected event"
echo "ended - $last"
