#!/usr/bin/env bash
# The main job on the local provider: make a session, work in it, look at its isolation, remove it.
set -euo pipefail
cd "$(dirname "$0")/.."
onmemos() { node bin/onmemos.js "$@"; }
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

id=$(onmemos create --provider auto --template python --namespace demo --user dev --ttl 10 --memory 512m --pids 256 --disk 1g)
trap 'onmemos rm --force "$id" >/dev/null' EXIT
echo "created session $id"

step onmemos exec "$id" -- python3 -c "'import sys; print(sys.version.split()[0])'"
onmemos exec "$id" -- python3 -c 'import sys; print(sys.version.split()[0])'

step "printf 'a\\nb\\nc\\n' | onmemos exec $id -- wc -l"
printf 'a\nb\nc\n' | onmemos exec "$id" -- wc -l

step onmemos exec "$id" -- sh -c "'echo \$WORKSPACE_ID \$NAMESPACE \$USER \$BUCKET_NAME; pwd; id'"
onmemos exec "$id" -- sh -c 'echo $WORKSPACE_ID $NAMESPACE $USER $BUCKET_NAME; pwd; id'

step "a background server in one exec, reached from the next"
onmemos exec "$id" -- sh -c 'cd /workspace && echo "hello from the session" > index.html && nohup python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &'
for _ in $(seq 50); do
  onmemos exec "$id" -- python3 -c 'import urllib.request as u; print(u.urlopen("http://127.0.0.1:8000/").read().decode().strip())' 2>/dev/null && break
  sleep 0.1
done

step "isolation: no capabilities, no /root, read-only host"
onmemos exec "$id" -- sh -c 'grep CapEff /proc/self/status; ls /root 2>&1; touch /usr/x 2>&1; true'

step "limits: 1 GiB of disk, 512 MiB of memory, 256 processes"
onmemos get "$id" | grep -E '^limits'
onmemos exec "$id" -- sh -c 'head -c 2G /dev/zero > /workspace/big; df -h /workspace | tail -1; rm /workspace/big' || true
onmemos exec "$id" -- python3 -c 'bytearray(1 << 30)' || echo "exit code $? (the allocation was killed inside the session)"

step onmemos exec "$id" -- sh -c "'exit 3'"
set +e; onmemos exec "$id" -- sh -c 'exit 3'; echo "exit code $?"; set -e

step onmemos ls --namespace demo
onmemos ls --namespace demo

step onmemos rm "$id"
onmemos rm "$id"
trap - EXIT
