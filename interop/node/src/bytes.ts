/**
 * Binary payloads and results. A class rather than a plain object so that a JSON payload which happens to look
 * like `{bytes, contentType}` can never be mistaken for binary data: test with `instanceof Bytes`.
 */
import { Limits } from "./constants.js";

export const OCTET_STREAM = "application/octet-stream";

/** Bytes with their content type: a binary payload received, or a binary result to send. */
export class Bytes {
  readonly bytes: Uint8Array;
  readonly contentType: string;

  constructor(data: Uint8Array, contentType: string = OCTET_STREAM) {
    const length = [...contentType].length;
    if (length < 1 || length > Limits.contentTypeMax) {
      throw new TypeError(`content type must be 1 to ${Limits.contentTypeMax} characters`);
    }
    this.bytes = data;
    this.contentType = contentType;
  }

  /** The bytes in standard base64 with padding, as the wire carries them. */
  toBase64(): string {
    return encodeBase64(this.bytes);
  }

  /** Keeps JSON.stringify of a Bytes readable (and never the default dump of a typed array). */
  toJSON(): { base64: string; contentType: string } {
    return { base64: this.toBase64(), contentType: this.contentType };
  }
}

/** Makes a binary result: `return bytes(png, "image/png")`. Strings are taken as UTF-8. */
export function bytes(data: Uint8Array | string, contentType: string = OCTET_STREAM): Bytes {
  return new Bytes(typeof data === "string" ? new TextEncoder().encode(data) : data, contentType);
}

export function encodeBase64(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64");
}

/** Decodes base64 that already matched the schema pattern (so it holds no stray characters). */
export function decodeBase64(text: string): Uint8Array {
  const buf = Buffer.from(text, "base64");
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}
