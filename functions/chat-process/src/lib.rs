//! `chat-process` (POST, service role): one batch of chat jobs through the
//! queue's worker. The logic lives in `systems/chat-queue`.

use edgeworks_chat_queue::process as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
