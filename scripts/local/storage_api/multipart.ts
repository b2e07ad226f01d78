// multipart/form-data as storage-js sends a File or Blob: the file in a part
// named "" (which the runtime's FormData parser drops, hence this parser),
// `cacheControl` and `metadata` as text fields. Binary-safe: the body is
// searched for the boundary as bytes, never decoded as a whole.

import { invalidRequest } from "./errors.ts";

export interface FormUpload {
  fields: Map<string, string>;
  /** The first part with a filename (or any non-text part): the object's bytes and type. */
  file: { bytes: Uint8Array<ArrayBuffer>; contentType: string } | null;
}

const utf8 = new TextEncoder();

function indexOf(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  const first = needle[0];
  const last = haystack.length - needle.length;
  outer: for (let i = haystack.indexOf(first, from); i !== -1 && i <= last; i = haystack.indexOf(first, i + 1)) {
    for (let j = 1; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

export function parseMultipart(body: Uint8Array<ArrayBuffer>, contentType: string): FormUpload {
  const m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  if (!m) throw invalidRequest("multipart/form-data without a boundary");
  const delimiter = utf8.encode(`--${m[1] ?? m[2]}`);
  const fields = new Map<string, string>();
  let file: FormUpload["file"] = null;
  let at = indexOf(body, delimiter, 0);
  if (at < 0) throw invalidRequest("the multipart body has no parts");
  for (;;) {
    at += delimiter.length;
    // `--` after a delimiter ends the body.
    if (body[at] === 0x2d && body[at + 1] === 0x2d) break;
    if (body[at] === 0x0d && body[at + 1] === 0x0a) at += 2;
    const headerEnd = indexOf(body, utf8.encode("\r\n\r\n"), at);
    if (headerEnd < 0) throw invalidRequest("a multipart part has no header end");
    const headers = new TextDecoder().decode(body.subarray(at, headerEnd));
    const next = indexOf(body, utf8.encode(`\r\n--${m[1] ?? m[2]}`), headerEnd + 4);
    if (next < 0) throw invalidRequest("the multipart body is cut off");
    const content = body.slice(headerEnd + 4, next);
    const disposition = /^content-disposition:(.*)$/im.exec(headers)?.[1] ?? "";
    const name = /\bname="([^"]*)"/i.exec(disposition)?.[1] ?? "";
    const hasFilename = /\bfilename\*?=/i.test(disposition);
    const type = /^content-type:\s*(.*?)\s*$/im.exec(headers)?.[1];
    if ((hasFilename || type !== undefined) && file === null) {
      file = { bytes: content, contentType: type || "application/octet-stream" };
    } else if (!hasFilename) {
      fields.set(name, new TextDecoder().decode(content));
    }
    at = next + 2;
  }
  return { fields, file };
}
