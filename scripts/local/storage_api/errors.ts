// Refusals as Supabase Storage answers them, so storage-js turns them into
// StorageApiError with the right `status`, `statusCode` and `code`:
// `{"statusCode": "<status>", "code": "<ErrorCode>", "error": "<ErrorCode>", "message": "..."}`
// with the HTTP status of Supabase's documented error-code table.

export class StorageFailure extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

export const CORS_HEADERS: Record<string, string> = {
  "access-control-allow-origin": "*",
  // Browsers reading a download or a TUS answer need these.
  "access-control-expose-headers":
    "content-length, content-range, content-type, etag, last-modified, cache-control, content-disposition, " +
    "location, upload-offset, upload-length, tus-resumable, tus-version, tus-extension, tus-max-size",
};

export function failureResponse(f: StorageFailure, extra: Record<string, string> = {}): Response {
  return Response.json(
    { statusCode: String(f.status), code: f.code, error: f.code, message: f.message },
    { status: f.status, headers: { ...CORS_HEADERS, ...extra } },
  );
}

export const noSuchBucket = () => new StorageFailure(404, "NoSuchBucket", "Bucket not found");
export const noSuchKey = () => new StorageFailure(404, "NoSuchKey", "Object not found");
export const invalidRequest = (message: string) => new StorageFailure(400, "InvalidRequest", message);
export const entityTooLarge = (limit: number) =>
  new StorageFailure(413, "EntityTooLarge", `The object exceeded the maximum allowed size (${limit} bytes)`);
export const invalidMime = (type: string) =>
  new StorageFailure(415, "InvalidMimeType", `mime type ${type} is not supported`);
export const alreadyExists = () => new StorageFailure(409, "Duplicate", "The resource already exists");
export const rlsRefused = () => new StorageFailure(403, "AccessDenied", "new row violates row-level security policy");

/** Postgres errors that are the caller's fault, as Storage reports them; others are rethrown. */
export function fromPostgres(e: unknown): never {
  const code = (e as { code?: string })?.code;
  if (code === "42501") throw rlsRefused();
  if (code === "23505") throw alreadyExists();
  throw e;
}
