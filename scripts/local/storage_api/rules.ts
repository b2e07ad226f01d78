// Rules on names, sizes and types: what Supabase Storage checks before it
// stores anything, so a refused request leaves nothing behind.

import { entityTooLarge, invalidMime, invalidRequest, StorageFailure } from "./errors.ts";
import type { BucketRow } from "./metadata.ts";

const utf8 = new TextEncoder();

/**
 * S3's bucket naming rules: the bytes live in an S3 bucket of the same name,
 * so a name S3 (s3s-fs) would refuse is refused here first.
 */
export function checkBucketName(name: unknown): string {
  if (typeof name !== "string" || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name) || name.includes("..")) {
    throw new StorageFailure(
      400,
      "InvalidBucketName",
      "Bucket names are 3-63 characters: lower-case letters, digits, '.' and '-'",
    );
  }
  return name;
}

/**
 * An object name is a path of non-empty segments. `.` and `..` are refused:
 * the local S3 server keeps objects as files, and S3 keys are at most 1024
 * bytes with (there) at most 255 per segment.
 */
export function checkObjectName(name: string): string {
  const bad = (why: string) => new StorageFailure(400, "InvalidKey", `Invalid key: ${why}`);
  if (name === "") throw bad("the object name is empty");
  if (name.includes("\u0000")) throw bad("NUL is not allowed");
  if (utf8.encode(name).length > 1024) throw bad("longer than 1024 bytes");
  for (const seg of name.split("/")) {
    if (seg === "" || seg === "." || seg === "..") throw bad("empty, '.' or '..' path segment");
    if (utf8.encode(seg).length > 255) throw bad("a path segment is longer than 255 bytes");
  }
  return name;
}

/** Bytes in a size Supabase takes for file_size_limit: a number, or "10MB", "1.5GB", "512KB" (1024 multiples). */
export function parseSize(v: unknown): number | null {
  if (v === null || v === undefined || v === "") return null;
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return v;
  if (typeof v === "string") {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|k|mb|mib|m|gb|gib|g)?\s*$/i.exec(v);
    if (m) {
      const shift = { "": 0, b: 0, k: 10, m: 20, g: 30 }[(m[2] ?? "").toLowerCase().slice(0, 1)] ?? 0;
      return Math.floor(Number(m[1]) * 2 ** shift);
    }
  }
  throw invalidRequest(`file_size_limit must be a number of bytes or a size like "10MB"`);
}

export function checkMimeTypes(v: unknown): string[] | null {
  if (v === null || v === undefined) return null;
  if (!Array.isArray(v) || v.some((t) => typeof t !== "string" || !/^[\w.+-]+\/([\w.+-]+|\*)$/.test(t))) {
    throw invalidRequest('allowed_mime_types must be a list like ["image/png", "image/*"]');
  }
  return v.length === 0 ? null : v.map((t) => t.toLowerCase());
}

/** The size limit that applies in `bucket`: its own and the project-wide one, whichever is smaller. */
export function sizeLimit(bucket: BucketRow, globalLimit: number | null): number | null {
  const own = bucket.file_size_limit === null ? null : Number(bucket.file_size_limit);
  const limits = [own, globalLimit].filter((x): x is number => x !== null);
  return limits.length ? Math.min(...limits) : null;
}

export function checkSize(bucket: BucketRow, globalLimit: number | null, size: number): void {
  const limit = sizeLimit(bucket, globalLimit);
  if (limit !== null && size > limit) throw entityTooLarge(limit);
}

/** `type/subtype` of a Content-Type, lower-cased, parameters dropped. */
export function mimeEssence(contentType: string): string {
  return contentType.split(";")[0].trim().toLowerCase();
}

export function checkMime(bucket: BucketRow, contentType: string): void {
  const allowed = bucket.allowed_mime_types;
  if (!allowed || allowed.length === 0) return;
  const essence = mimeEssence(contentType);
  const [type, sub] = essence.split("/");
  const ok = !!sub && allowed.some((p) => p.endsWith("/*") ? p.slice(0, -2) === type : p.toLowerCase() === essence);
  if (!ok) throw invalidMime(essence);
}
