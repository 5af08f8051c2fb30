/**
 * Builds heartbeat bodies (SPEC §5). Pure, so the canonical heartbeat vectors check exactly this code.
 */
import { Limits, MessageType, PROTOCOL_VERSION } from "./constants.js";
import type { HeartbeatUpdate } from "./types.js";

/**
 * The heartbeat for one attempt. A progress outside 0..1 is a handler bug and throws a RangeError; a message
 * longer than the schema allows is cut rather than refused, because a status line is not worth failing over.
 */
export function heartbeatBody(taskId: string, token: string, update: HeartbeatUpdate = {}): Record<string, unknown> {
  const body: Record<string, unknown> = {
    type: MessageType.heartbeat,
    protocol: PROTOCOL_VERSION,
    task_id: taskId,
    attempt_token: token,
  };
  const { progress, message } = update;
  if (progress !== undefined) {
    if (typeof progress !== "number" || !(progress >= 0 && progress <= 1)) {
      throw new RangeError(`heartbeat progress must be a number from 0 to 1, got ${String(progress)}`);
    }
    body.progress = progress;
  }
  if (message !== undefined) {
    const points = [...String(message)];
    body.message = points.length > Limits.messageMax ? points.slice(0, Limits.messageMax).join("") : String(message);
  }
  return body;
}
