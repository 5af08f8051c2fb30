/** Loads the shared vector files (protocol/vectors/*.json); each file's "description" says how to read it. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { vectorsDir } from "./paths.js";

export interface VectorCase {
  name: string;
  description: string;
  body?: Record<string, unknown>;
  body_text?: string;
  headers?: Record<string, string>;
  intent?: Record<string, any>;
  schema_valid?: boolean;
  expect: Record<string, any>;
}

export interface VectorFile {
  message: string;
  description: string;
  attempt_token: string;
  cases: VectorCase[];
}

export function loadVectors(name: "task_request" | "task_reply" | "heartbeat" | "cancel"): VectorFile {
  return JSON.parse(readFileSync(join(vectorsDir, `${name}.json`), "utf8")) as VectorFile;
}

/** The bytes a case puts on the wire: `body_text` as is, or `body` as JSON. */
export function caseBytes(c: VectorCase): Uint8Array {
  return new TextEncoder().encode(c.body_text !== undefined ? c.body_text : JSON.stringify(c.body));
}
