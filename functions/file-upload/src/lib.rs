//! `file-upload`: wiring only. The logic lives in `systems/ai-chat` (signed
//! upload URLs, type by magic bytes, 10 MB, the `chat-files` bucket).

use edgeworks_ai_chat::file_upload as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
