// chat-completion: ai-chat (Rust, in ./pkg).
import * as glue from "./pkg/chat_completion.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("chat-completion", glue, new URL("./pkg/chat_completion_bg.wasm", import.meta.url));
