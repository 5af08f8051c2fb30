/** Keeps the SDK's copies of schema patterns and limits, and its version, equal to their sources. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import * as C from "../src/constants.js";
import { packageRoot, schemasDir } from "./helpers/paths.js";

const schema = (name: string): any => JSON.parse(readFileSync(join(schemasDir, name), "utf8"));

it("patterns are the schemas' patterns", () => {
  const defs = schema("common.schema.json").$defs;
  const request = schema("task_request.schema.json");
  assert.equal(C.NAME_PATTERN.source, defs.name.pattern);
  assert.equal(C.TOKEN_PATTERN.source, defs.token.pattern);
  assert.equal(C.TIMESTAMP_PATTERN.source, defs.timestamp.pattern);
  assert.equal(C.SUBJECT_PATTERN.source, defs.subject.pattern);
  assert.equal(C.TRACEPARENT_PATTERN.source, request.properties.traceparent.pattern);
  assert.equal(C.BASE64_PATTERN.source, defs.base64.pattern);
  assert.equal(request.then.properties.payload.$ref, "common.schema.json#/$defs/base64");
  assert.equal(C.MAX_RETRY_AFTER_MS, defs.retry_after_ms.maximum);
});

it("limits and enums are the schemas'", () => {
  const defs = schema("common.schema.json").$defs;
  assert.equal(C.Limits.nameMax, defs.name.maxLength);
  assert.equal(C.Limits.errorCodeMax, defs.error.properties.code.maxLength);
  assert.equal(C.Limits.errorMessageMax, defs.error.properties.message.maxLength);
  assert.equal(C.Limits.contentTypeMax, schema("task_request.schema.json").properties.content_type.maxLength);
  assert.equal(C.Limits.messageMax, schema("heartbeat.schema.json").properties.message.maxLength);
  assert.equal(C.Limits.messageMax, schema("cancel.schema.json").properties.message.maxLength);
  assert.deepEqual([...C.CANCEL_REASONS], schema("cancel.schema.json").properties.reason.enum);
  assert.equal(C.MessageType.taskRequest, schema("task_request.schema.json").properties.type.const);
  assert.equal(C.MessageType.taskReply, schema("task_reply.schema.json").properties.type.const);
  assert.equal(C.MessageType.heartbeat, schema("heartbeat.schema.json").properties.type.const);
  assert.equal(C.MessageType.cancel, schema("cancel.schema.json").properties.type.const);
});

it("SDK_VERSION is package.json's version", () => {
  const pkg = JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8"));
  assert.equal(C.SDK_VERSION, pkg.version);
  assert.equal(C.SDK_NAME, `node/${pkg.version}`);
});
