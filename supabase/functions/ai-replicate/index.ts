// ai-replicate: pipelines (Rust, in ./pkg).
import * as glue from "./pkg/ai_replicate.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("ai-replicate", glue, new URL("./pkg/ai_replicate_bg.wasm", import.meta.url));
