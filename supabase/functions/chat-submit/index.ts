// chat-submit: seed 000's chat job queue (Rust, in ./pkg).
import * as glue from "./pkg/chat_submit.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("chat-submit", glue, new URL("./pkg/chat_submit_bg.wasm", import.meta.url));
