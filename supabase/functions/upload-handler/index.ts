// upload-handler: seed 004's upload pipeline (Rust, in ./pkg).
import * as glue from "./pkg/upload_handler.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("upload-handler", glue, new URL("./pkg/upload_handler_bg.wasm", import.meta.url));
