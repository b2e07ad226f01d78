// websocket-handler: ai-chat (Rust, in ./pkg).
import * as glue from "./pkg/websocket_handler.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("websocket-handler", glue, new URL("./pkg/websocket_handler_bg.wasm", import.meta.url));
