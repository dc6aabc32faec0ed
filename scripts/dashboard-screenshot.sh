#!/usr/bin/env bash
# The watch dashboard in a real headless browser: simulates a fleet whose
# model 1.4 slows time to first token on older phones, ingests it, detects
# the regression, serves the log with `hearth serve --telemetry-dir`, opens
# /watch drilled into the alert in Debian's chromium, saves a screenshot and
# checks that the rendered page names the alert's root cause. Exits non-zero
# when it does not. Not part of CI (it needs chromium and a release build).
#
#   scripts/dashboard-screenshot.sh [--out docs/watch-dashboard.png] [--keep]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/docs/watch-dashboard.png"
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$(realpath -m "$2")"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--out FILE.png] [--keep]" >&2; exit 2 ;;
    esac
done

browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
    echo "installing Debian's chromium" >&2
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get install -y chromium >&2 \
        || { $sudo_cmd apt-get update >&2 && $sudo_cmd apt-get install -y chromium >&2; }
    browser="$(command -v chromium)"
fi
command -v python3 >/dev/null || { echo "python3 is needed to read the API's JSON" >&2; exit 1; }

(cd "$root" && cargo build --release --locked -p hearth >&2)
hearth="$root/target/release/hearth"

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "$keep" -eq 1 ]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

log="$work/log"
"$hearth" watch simulate --out "$work/events.jsonl" --hours 48 --inject older-phone-ttft >&2
"$hearth" watch ingest "$work/events.jsonl" --dir "$log" >&2
"$hearth" watch detect --dir "$log" >&2
id="$("$hearth" watch alerts --dir "$log" --json \
    | python3 -c 'import json, sys; alerts = json.load(sys.stdin); print(alerts[0]["id"] if alerts else "")')"
if [ -z "$id" ]; then
    echo "no alert was detected" >&2
    exit 1
fi

"$hearth" serve --model smollm2-135m-instruct --threads 1 --embeddings none \
    --port 0 --telemetry-dir "$log" >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
address=""
for _ in $(seq 1 240); do
    address="$(sed -n 's|^hearth: listening on \(http://[^ ]*\)$|\1|p' "$work/serve.out")"
    [ -n "$address" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/serve.err" >&2
        echo "the server stopped before listening" >&2
        exit 1
    fi
    sleep 0.5
done
if [ -z "$address" ]; then
    echo "the server did not start listening" >&2
    exit 1
fi
echo "serving $log at $address; alert $id" >&2

cause="$(python3 - "$address/watch/api/alerts/$id" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1]) as reply:
    alert = json.load(reply)
print(alert["evidence"]["cause_label"] or "")
EOF
)"
echo "root cause from the API: $cause" >&2

url="$address/watch#alert=$id"
browser_flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars
    --window-size=1400,1000 --virtual-time-budget=20000)
mkdir -p "$(dirname "$out")"
"$browser" "${browser_flags[@]}" --screenshot="$out" "$url" 2>"$work/chromium.err" \
    || { cat "$work/chromium.err" >&2; exit 1; }
"$browser" "${browser_flags[@]}" --dump-dom "$url" >"$work/dom.html" 2>>"$work/chromium.err" \
    || { cat "$work/chromium.err" >&2; exit 1; }

python3 - "$work/dom.html" "$cause" <<'EOF'
import html, re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
cause = sys.argv[2]
drill = re.search(r'<section id="drill" data-state="([a-z]+)"', dom)
if not drill or drill.group(1) != "ready":
    sys.exit(f"the drill-down did not render (state {drill.group(1) if drill else 'missing'})")
cells = [html.unescape(cell) for cell in re.findall(r'<td class="cause-slice">([^<]*)</td>', dom)]
if not cause or cause not in cells:
    sys.exit(f"the rendered root cause {cells} does not name {cause!r}")
charts = len(re.findall(r'<path d="M', dom))
onsets = len(re.findall(r'class="onset"', dom))
if charts < 3 or onsets < 2:
    sys.exit(f"charts not drawn: {charts} lines, {onsets} onset marks")
print(f"rendered: root cause {cause}, {charts} lines, {onsets} onset marks")
EOF
echo "screenshot: $out" >&2
