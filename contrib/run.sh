#!/usr/bin/env bash
# make run: start the bundled mock backend and promptgate with the default
# configuration (conf/promptgate.json), print a curl that works, and stay
# in the foreground until Ctrl-C, which stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
CONF=${CONF:-conf/promptgate.json}
MOCK_LISTEN=${MOCK_LISTEN:-127.0.0.1:8000}
GW=127.0.0.1:8080

in_use() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
for hp in "$MOCK_LISTEN" "$GW"; do
    if in_use "$hp"; then
        echo "run: $hp is already in use; stop what listens there (ss -ltnp 'sport = :${hp#*:}') and try again" >&2
        exit 1
    fi
done

pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

"$BIN/mockllm" --listen "$MOCK_LISTEN" --token-delay-ms 30 &
pids+=($!)
"$BIN/promptgate" -c "$CONF" &
pids+=($!)

for _ in $(seq 50); do
    curl -fsS "http://$GW/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://$GW/readyz" >/dev/null || { echo "run: promptgate did not become ready" >&2; exit 1; }

cat <<MSG

promptgate is listening on http://$GW (mock backend on $MOCK_LISTEN). Try:

  curl -s http://$GW/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "qwen2.5-7b", "messages": [{"role": "user", "content": "为保温杯写一句卖点"}]}'

  curl -sN http://$GW/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "qwen2.5-7b", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'

  curl -s http://$GW/v1/models

Access log lines appear below. Ctrl-C stops both.

MSG
wait -n "${pids[@]}"
