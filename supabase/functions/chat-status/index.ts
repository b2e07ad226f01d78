// chat-status: seed 000's chat job queue (Rust, in ./pkg).
import * as glue from "./pkg/chat_status.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("chat-status", glue, new URL("./pkg/chat_status_bg.wasm", import.meta.url));
