// processing-webhook: seed 004's upload pipeline (Rust, in ./pkg).
import * as glue from "./pkg/processing_webhook.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("processing-webhook", glue, new URL("./pkg/processing_webhook_bg.wasm", import.meta.url));
