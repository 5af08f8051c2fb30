/**
 * A handler service with the tracing middleware, used by tests/tracing: it serves the task type named by
 * JETBRIDGE_TYPE, fails an attempt with a retry while its number is at most the payload's `fail_attempts`, and
 * completes it otherwise.
 *
 *   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 JETBRIDGE_TYPE=trace:node node examples/traced.js
 */
import { Retry, createService, serve } from "jetbridge";
import { setupTracing, tracing } from "jetbridge/otel";

const provider = setupTracing("traced-node");
const service = createService({ name: "traced-node", version: "1.0.0" });
service.use(tracing());
service.handle(process.env.JETBRIDGE_TYPE || "trace:node", async (task) => {
  if (task.attempt <= (task.payload?.fail_attempts ?? 0)) {
    throw new Retry("planned_failure", `attempt ${task.attempt} fails on purpose`, { retryAfterMs: 50 });
  }
  return { lang: "node", attempt: task.attempt };
});
const { done } = await serve(service);
console.log("ready");
await done;
await provider?.shutdown();
