#!/usr/bin/env bash
# The conformance task types of interop/README.md as one shell script, run by `jetbridge handle` once per task.
# Payloads are small flat JSON objects; they are read with sed so that the script needs nothing but bash and
# coreutils (a real handler would use jq).
set -u

EVENTS=jetbridge.conformance.events
ID=$JETBRIDGE_TASK_ID
ATTEMPT=$JETBRIDGE_TASK_ATTEMPT
INSTANCE=${JETBRIDGE_INSTANCE:-shell}

control() { printf '%s\n' "$*" >&3; }                     # a line for jetbridge on fd 3

event() {                                                  # event KIND [MORE_JSON_MEMBERS]
    control "publish $EVENTS {\"event\":\"$1\",\"task_id\":\"$ID\",\"attempt\":$ATTEMPT,\"instance\":\"$INSTANCE\"${2:+,$2}}"
}

number() {                                                 # number NAME: a number member of $PAYLOAD, or ""
    printf '%s' "$PAYLOAD" | sed -nE "s/.*\"$1\"[[:space:]]*:[[:space:]]*(-?[0-9]+).*/\1/p" | head -n 1
}

flag() {                                                   # flag NAME: succeeds if the member is true
    printf '%s' "$PAYLOAD" | grep -Eq "\"$1\"[[:space:]]*:[[:space:]]*true"
}

text() {                                                   # text NAME: a string member, simple escapes undone
    printf '%s' "$PAYLOAD" | sed -nE "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"(([^\"\\\\]|\\\\.)*)\".*/\1/p" \
        | head -n 1 | sed -E 's/\\"/"/g; s/\\\//\//g' | { IFS= read -r s; printf '%b' "$s"; }
}

seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

fail() {                                                   # fail CODE MESSAGE: a retryable error
    control "error-code $1"
    printf '%s\n' "$2" >&2
    exit 1
}

on_term() {
    # jetbridge wrote "cancel REASON" on fd 3 before it sent SIGTERM to the script and everything it started.
    # Reasons from a cancel message become a `cancelled` event; result_too_large is jetbridge's own.
    read -r -t 1 _ reason <&3 || reason=unknown
    case "$reason" in
    operator | deadline | timeout | lost | shutdown) event cancelled "\"reason\":\"$reason\"" ;;
    esac
    exit 143
}
trap on_term TERM
event started
case "$JETBRIDGE_TASK_TYPE" in
conf:echo)                                                 # bytes stay bytes: never through a variable
    [ "$JETBRIDGE_TASK_CONTENT_TYPE" = application/json ] || control "content-type $JETBRIDGE_TASK_CONTENT_TYPE"
    exec cat
    ;;
esac

PAYLOAD=$(cat)

case "$JETBRIDGE_TASK_TYPE" in
conf:info)
    printf '{"instance":"%s","lang":"shell","task_id":"%s","attempt":%d,"max_attempts":%d,"queue":"%s","budget_ms":%d}\n' \
        "$INSTANCE" "$ID" "$ATTEMPT" "$JETBRIDGE_TASK_MAX_ATTEMPTS" "$JETBRIDGE_TASK_QUEUE" "$JETBRIDGE_TASK_BUDGET_MS"
    ;;
conf:fail)
    times=$(number times)
    times=${times:-0}
    [ "$ATTEMPT" -le "$times" ] && fail planned_failure "failure $ATTEMPT of $times"
    printf '{"attempt":%d}\n' "$ATTEMPT"
    ;;
conf:retry_after)
    if [ "$ATTEMPT" -eq 1 ]; then
        control "retry-after $(number ms)ms"
        fail planned_failure "retry later"
    fi
    printf '{"attempt":%d}\n' "$ATTEMPT"
    ;;
conf:terminate)
    message=$(text message)
    control "error-code planned_terminate"
    printf '%s\n' "${message:-terminated}" >&2
    exit 100
    ;;
conf:sleep)
    ms=$(number ms); ms=${ms:-0}
    steps=$(number steps); steps=${steps:-1}; [ "$steps" -ge 1 ] || steps=1
    only=$(number only_attempt)
    if [ -n "$only" ] && [ "$only" != "$ATTEMPT" ]; then
        printf '{"slept_ms":0,"attempt":%d}\n' "$ATTEMPT"
        exit 0
    fi
    if flag ignore_cancel; then
        trap '' TERM                                       # jetbridge sends SIGKILL after its kill grace
    fi
    for ((i = 1; i <= steps; i++)); do
        sleep "$(seconds $((ms / steps)))" &
        wait $!                                            # a trapped signal interrupts wait, not sleep
        control "progress $i/$steps step $i of $steps"
    done
    printf '{"slept_ms":%d,"attempt":%d}\n' "$ms" "$ATTEMPT"
    ;;
conf:big)
    control "content-type application/octet-stream"
    head -c "$(number bytes)" /dev/zero | tr '\0' a
    ;;
conf:panic)
    echo "conformance panic: an unexpected failure" >&2
    exit 70
    ;;
*)
    echo "no handler for task type $JETBRIDGE_TASK_TYPE" >&2
    exit 100
    ;;
esac
