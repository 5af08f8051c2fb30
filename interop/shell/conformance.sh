#!/usr/bin/env bash
# The shell conformance handler (see interop/README.md): `jetbridge handle` runs conformance_handler.sh per task.
# Reads NATS_URL, JETBRIDGE_SUBJECT_PREFIX, JETBRIDGE_INSTANCE and JETBRIDGE_CONCURRENCY; prints `ready` once
# subscribed; drains on SIGTERM.
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
export JETBRIDGE_INSTANCE="${JETBRIDGE_INSTANCE:-shell-$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')}"
exec "$REPO/.venv/bin/jetbridge" --server "${NATS_URL:-nats://127.0.0.1:4222}" handle \
    conf:echo conf:info conf:fail conf:retry_after conf:terminate conf:sleep conf:big conf:panic \
    --name jetbridge-conformance --concurrency "${JETBRIDGE_CONCURRENCY:-64}" \
    --prefix "${JETBRIDGE_SUBJECT_PREFIX:-jetbridge.task}" --grace 30s --kill-grace 2s \
    -- "$REPO/interop/shell/conformance_handler.sh"
