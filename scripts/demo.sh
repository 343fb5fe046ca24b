#!/usr/bin/env bash
# make demo: sega-uploader end to end on a demo tree, against a loopback stand-in for the
# endpoint (sega-testsrv on 127.0.0.1). Nothing leaves this machine; nothing outside
# target/demo is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/target/debug
DEMO=$PWD/target/demo
rm -rf "$DEMO"
mkdir -p "$DEMO"
today=$(date +%F)
yesterday=$(date -d yesterday +%F)
SRV=""
DAEMON=""
cleanup() { for p in $DAEMON $SRV; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_for() { # wait_for SECONDS COMMAND...: poll until the command succeeds
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || { echo "demo: timed out waiting for: $*" >&2; exit 1; }
        sleep 0.1
    done
}

say "1. a loopback stand-in for the endpoint"
"$BIN/sega-testsrv" --listen 127.0.0.1:0 --addr-file "$DEMO/addr" --log "$DEMO/requests.jsonl" \
    2>"$DEMO/endpoint.log" >/dev/null &
SRV=$!
wait_for 10 test -s "$DEMO/addr"
URL=$(sed -n 1p "$DEMO/addr")
echo "endpoint: $URL (every request is parsed strictly and logged to $DEMO/endpoint.log)"

say "2. a demo tree with real images already waiting"
for f in Sega_1 Sega_2 Sega_3; do mkdir -p "$DEMO/data/$f/$today"; done
mkdir -p "$DEMO/data/Sega_3/$yesterday"
"$BIN/sega-sample" jpeg "$DEMO/data/Sega_1/$today/IMG_0001.jpg" --seed 1
"$BIN/sega-sample" jpeg "$DEMO/data/Sega_1/$today/IMG_0002.JPG" --seed 2 --size 250000
"$BIN/sega-sample" png  "$DEMO/data/Sega_2/$today/cam2_120301.png" --seed 3
"$BIN/sega-sample" jpeg "$DEMO/data/Sega_3/$yesterday/late_night.jpg" --seed 4
"$BIN/sega-sample" jpeg "$DEMO/data/Sega_2/$today/.hidden.jpg" --seed 5          # hidden: ignored
"$BIN/sega-sample" jpeg "$DEMO/data/Sega_2/$today/copying.jpg.part" --seed 6     # partial: ignored
echo "this is not a picture" > "$DEMO/data/Sega_3/$today/notes.jpg"                 # wrong content: skipped
(cd "$DEMO/data" && find . -type f | sort | sed 's/^/  /')

cat > "$DEMO/config.json" <<JSON
{
  "watch": { "root": "$DEMO/data", "settle_secs": 1 },
  "upload": { "url": "$URL", "workers": 2, "fields": { "folder": "{folder}", "date": "{date}", "name": "{filename}" } },
  "database": { "path": "$DEMO/sega.db" },
  "log": { "level": "info" }
}
JSON
echo "config: $DEMO/config.json"
"$BIN/sega-uploader" -c "$DEMO/config.json" check-config | tail -n 6

say "3. the daemon, live: it catches up, then sees new images within milliseconds"
"$BIN/sega-uploader" -c "$DEMO/config.json" run 2>"$DEMO/daemon.log" &
DAEMON=$!
wait_for 20 grep -q "ready" "$DEMO/daemon.log"
wait_for 20 bash -c "[ \$(grep -c ' 200 ' '$DEMO/endpoint.log') -ge 4 ]"
grep -E "ready|uploaded|skipped|not an image" "$DEMO/daemon.log" | sed 's/^/  /'
for i in 1 2 3 4 5 6; do
    folder="Sega_$(( (i - 1) % 3 + 1 ))"
    name=$(printf 'LIVE_%04d.jpg' "$i")
    "$BIN/sega-sample" jpeg "$DEMO/data/$folder/$today/$name" --seed $((100 + i))
    wait_for 10 grep -q "$name" "$DEMO/endpoint.log"
    echo "  dropped $folder/$today/$name -> $(grep "$name" "$DEMO/endpoint.log" | tail -n 1)"
    sleep 0.3
done

say "4. a clean stop (SIGTERM)"
kill -TERM "$DAEMON"
wait "$DAEMON" && echo "  daemon exited 0" || { echo "  daemon exited $?"; exit 1; }
DAEMON=""
grep -E "stopping|stopped" "$DEMO/daemon.log" | sed 's/^/  /'

say "5. what arrived at the endpoint"
sed 's/^/  /' "$DEMO/endpoint.log"

say "6. sega-uploader status"
"$BIN/sega-uploader" -c "$DEMO/config.json" status

say "done: logs and database are in $DEMO"
