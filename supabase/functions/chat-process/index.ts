// chat-process: seed 000's chat job queue (Rust, in ./pkg).
import * as glue from "./pkg/chat_process.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("chat-process", glue, new URL("./pkg/chat_process_bg.wasm", import.meta.url));
