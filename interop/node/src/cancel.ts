/**
 * Reads cancel messages (SPEC §7). Invalid ones are reported as such so the caller can ignore them, as the
 * cancel vectors require.
 */
import type { CancelReason } from "./types.js";
import { cancelProblem, isObject } from "./validate.js";

export type CancelMessage =
  | { valid: true; taskId: string; token: string; reason: CancelReason; message: string | undefined }
  | { valid: false; problem: string };

export function parseCancel(data: Uint8Array): CancelMessage {
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch {
    return { valid: false, problem: "not JSON" };
  }
  if (!isObject(body)) return { valid: false, problem: "not a JSON object" };
  const problem = cancelProblem(body);
  if (problem) return { valid: false, problem };
  return {
    valid: true,
    taskId: body.task_id as string,
    token: body.attempt_token as string,
    reason: body.reason as CancelReason,
    message: body.message as string | undefined,
  };
}
