#!/usr/bin/env bash
# Smoke test of the dispatcher image (run by image/build.sh; alone: bash image/smoke.sh [IMAGE]).
#
# A test nats-server runs on the host's loopback, the image's dispatcher runs in a buildah working container with
# chroot isolation (which shares the host's network), and the demo Python handler runs on the host. One task is
# enqueued from the host and must complete; /readyz must answer 200 and /metrics must have jetbridge_tasks_total;
# every log line must be JSON; and SIGTERM to the container's process must drain it to exit status 0.
# Everything it starts is stopped, by pid, and its working container removed, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${1:-localhost/jetbridge:latest}
# JETBRIDGE_* variables are dispatcher settings (an unknown one is an error): none from the caller may leak in.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^JETBRIDGE_' || true)
BUILDAH=(buildah --storage-driver vfs)
QUEUE=SMOKE

log() { printf '\033[1m== smoke: %s\033[0m\n' "$*" >&2; }
fail() {
  printf 'smoke: FAILED: %s\n' "$*" >&2
  for f in dispatcher handler nats; do
    [ -s "$TMP/$f.log" ] && { printf -- '--- last lines of %s.log\n' "$f" >&2; tail -n 25 "$TMP/$f.log" >&2; }
  done
  exit 1
}

[ -x .venv/bin/nats-server ] && [ -x .venv/bin/jetbridge ] || make venv
for tool in buildah curl ps; do command -v "$tool" >/dev/null || { echo "smoke: $tool is required" >&2; exit 1; }; done

TMP=$(mktemp -d /tmp/jetbridge-smoke.XXXXXX)
CTR=jetbridge-smoke-$$
NATS_PID="" HANDLER_PID="" RUN_PID=""

# All descendants of a pid (the container's processes are the buildah run's descendants: chroot isolation keeps
# the host's pid namespace).
descendants() {
  local kid
  for kid in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$kid"; descendants "$kid"; done
}
cleanup() {
  local pid
  if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then
    for pid in $(descendants "$RUN_PID"); do kill -KILL "$pid" 2>/dev/null || true; done
    kill -KILL "$RUN_PID" 2>/dev/null || true
  fi
  for pid in $HANDLER_PID $NATS_PID; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $RUN_PID $HANDLER_PID $NATS_PID; do wait "$pid" 2>/dev/null || true; done
  "${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local until=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    [ $SECONDS -lt $until ] || fail "timed out waiting for $what"
    sleep 0.3
  done
}

# The image's configuration: what `docker run IMAGE` would do.
"${BUILDAH[@]}" inspect --type image "$IMAGE" >"$TMP/inspect.json"
config() { python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["Docker"]["config"]; print(json.dumps(c.get(sys.argv[2])))' "$TMP/inspect.json" "$1"; }
ENTRYPOINT=$(config Entrypoint)
CMD=$(config Cmd)
USER_=$(config User | tr -d '"')
ENV_=$(config Env)
HEALTH=$(config Healthcheck)
log "image $IMAGE: entrypoint $ENTRYPOINT, cmd $CMD, user $USER_"
[ "$ENTRYPOINT" = '["jetbridge"]' ] || fail "ENTRYPOINT is $ENTRYPOINT, want [\"jetbridge\"]"
[ "$CMD" = '["run"]' ] || fail "CMD is $CMD, want [\"run\"]"
case "$USER_" in "" | null | root | root:* | 0 | 0:*) fail "the image runs as root ($USER_)" ;; esac
for want in JETBRIDGE_LOG_FORMAT=json JETBRIDGE_METRICS_LISTEN=0.0.0.0:9464 JETBRIDGE_DATA_DIR=/var/lib/jetbridge; do
  [[ $ENV_ == *"\"$want\""* ]] || fail "the image's environment lacks $want"
done
[[ $HEALTH == *healthz* ]] || fail "the image has no HEALTHCHECK on /healthz"

# The final image must carry no build tools.
"${BUILDAH[@]}" from --pull=never --name "$CTR" "$IMAGE" >/dev/null
tools=$("${BUILDAH[@]}" run --isolation chroot "$CTR" -- sh -c \
  'id -u; for t in gcc cc c++ make ld pip pip3 /opt/jetbridge/bin/pip; do command -v $t || true; done')
uid=$(head -n1 <<<"$tools")
[ "$uid" != 0 ] || fail "the container's process runs as uid 0"
[ "$(tail -n +2 <<<"$tools")" = "" ] || fail "build tools in the final image: $(tail -n +2 <<<"$tools" | tr '\n' ' ')"
log "runs as uid $uid; no compiler, make or pip in the image"

# A test NATS server on loopback.
NATS_PORT=$(free_port)
mkdir -p "$TMP/js"
.venv/bin/nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$TMP/js" >"$TMP/nats.log" 2>&1 &
NATS_PID=$!
wait_for 20 "nats-server on port $NATS_PORT" port_open "$NATS_PORT"
URL=nats://127.0.0.1:$NATS_PORT
log "nats-server on $URL (pid $NATS_PID)"

# The dispatcher, in the container: the image's entrypoint with `run` and the test server. Metrics on the image's
# default :9464 unless something on this host already listens there.
METRICS_PORT=9464
envs=()
if port_open 9464; then
  METRICS_PORT=$(free_port)
  envs=(--env "JETBRIDGE_METRICS_LISTEN=127.0.0.1:$METRICS_PORT")
  log "port 9464 is taken on this host; metrics on $METRICS_PORT instead"
fi
# The server comes from the environment, as in a Deployment; the command is the image's ENTRYPOINT and CMD
# (`jetbridge run`) plus the queue.
envs+=(--env "JETBRIDGE_SERVER=$URL")
argv=$(python3 -c 'import json, sys; print("\n".join(json.loads(sys.argv[1]) + json.loads(sys.argv[2])))' \
  "$ENTRYPOINT" "$CMD")
mapfile -t argv <<<"$argv"
argv+=(--queue "$QUEUE")
log "container: JETBRIDGE_SERVER=$URL ${argv[*]}"
"${BUILDAH[@]}" run --isolation chroot "${envs[@]}" "$CTR" -- "${argv[@]}" >"$TMP/dispatcher.log" 2>&1 &
RUN_PID=$!
ready() { kill -0 "$RUN_PID" 2>/dev/null || fail "the dispatcher exited early"; [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$METRICS_PORT/readyz")" = 200 ]; }
wait_for 60 "/readyz to answer 200" ready
log "/readyz: 200"

# The handler on the host.
NATS_URL=$URL .venv/bin/python interop/python/demo_handler.py >"$TMP/handler.log" 2>&1 &
HANDLER_PID=$!
wait_for 30 "the handler to start" grep -qs '^ready' "$TMP/handler.log"
log "handler interop/python/demo_handler.py ready (pid $HANDLER_PID)"

# One task, end to end.
out=$(.venv/bin/jetbridge --server "$URL" enqueue image:thumbnail '{"file":"a.png"}' --queue "$QUEUE" --wait 30 --json) \
  || fail "enqueue failed: $out"
state=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("state"))' "$out" 2>/dev/null || true)
[ "$state" = complete ] || fail "the task ended $state, want complete: $out"
log "task: $(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(d["id"], d["state"], "result", json.dumps(d.get("result")))' "$out")"

# Metrics and health.
metrics=$(curl -sf "http://127.0.0.1:$METRICS_PORT/metrics") || fail "GET /metrics failed"
grep -q '^jetbridge_tasks_total' <<<"$metrics" || fail "/metrics has no jetbridge_tasks_total"
log "/metrics: $(grep '^jetbridge_tasks_total' <<<"$metrics" | head -n 3 | tr '\n' ' ')"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$METRICS_PORT/healthz")" = 200 ] || fail "/healthz is not 200"
log "/healthz: 200"

# SIGTERM the container's process: it must drain and exit 0.
# (buildah run → buildah-chroot-runtime → buildah-chroot-exec → python …/jetbridge run: the last is the dispatcher)
target=""
for pid in $(descendants "$RUN_PID"); do
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  case "$cmdline" in buildah*) ;; *"bin/jetbridge run"*) target=$pid ;; esac
done
[ -n "$target" ] || fail "cannot find the container's jetbridge process"
log "SIGTERM to the container's process (pid $target: $(tr '\0' ' ' <"/proc/$target/cmdline"))"
kill -TERM "$target"
deadline=$((SECONDS + 45))
while kill -0 "$RUN_PID" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || fail "the dispatcher did not exit within 45s of SIGTERM"
  sleep 0.2
done
rc=0
wait "$RUN_PID" || rc=$?
RUN_PID=""
[ "$rc" = 0 ] || fail "the dispatcher exited $rc after SIGTERM, want 0"
log "drained and exited 0"

# Its log: JSON lines only.
python3 - "$TMP/dispatcher.log" <<'PY' || fail "the dispatcher's log is not JSON lines"
import json, sys
lines = [line for line in open(sys.argv[1]) if line.strip()]
events = [json.loads(line) for line in lines]
assert events, "no log lines"
print(f"== smoke: log: {len(events)} JSON lines, e.g. {lines[0].strip()[:160]}", file=sys.stderr)
PY
echo "smoke: OK"
