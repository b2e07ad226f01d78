// file-upload: ai-chat (Rust, in ./pkg).
import * as glue from "./pkg/file_upload.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("file-upload", glue, new URL("./pkg/file_upload_bg.wasm", import.meta.url));
