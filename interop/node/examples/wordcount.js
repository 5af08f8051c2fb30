/**
 * Example handler service: counts the words of a text.
 *
 *   NATS_URL=nats://127.0.0.1:4222 node examples/wordcount.js
 *   jetbridge enqueue text:wordcount '{"text": "the quick brown fox jumps over the lazy dog"}'
 *
 * It shows the parts most handlers need: reading the payload, refusing a bad one for good (Terminate),
 * reporting progress, stopping when the attempt is cancelled, and returning a JSON result.
 */
import { Terminate, createService, serve } from "jetbridge";

/** @typedef {import("jetbridge").Task} Task */

const service = createService({ name: "wordcount", version: "1.0.0" });

service.handle("text:wordcount", async (/** @type {Task} */ task) => {
  const text = task.payload?.text;
  if (typeof text !== "string") {
    // Retrying would not help a malformed payload: fail the task for good.
    throw new Terminate("bad_payload", 'expected a payload like {"text": "..."}');
  }
  const words = text.toLowerCase().match(/[\p{L}\p{N}']+/gu) ?? [];
  const counts = new Map();
  for (let i = 0; i < words.length; i++) {
    // The dispatcher may cancel the attempt, or its budget may run out: stop working then.
    task.signal.throwIfAborted();
    counts.set(words[i], (counts.get(words[i]) ?? 0) + 1);
    if (i > 0 && i % 100_000 === 0) {
      task.heartbeat({ progress: i / words.length, message: `${i} words counted` });
      await new Promise((resolve) => setImmediate(resolve)); // let heartbeats and cancels through
    }
  }
  const top = [...counts].sort((a, b) => b[1] - a[1]).slice(0, 3);
  return { words: words.length, distinct: counts.size, top: Object.fromEntries(top) };
});

const { done } = await serve(service);
console.log(`wordcount: handling ${service.taskTypes.join(", ")} (Ctrl-C drains and stops)`);
await done;
