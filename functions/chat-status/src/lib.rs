//! `chat-status` (GET/POST, the job's owner): a job's or a session's
//! status. The logic lives in `systems/chat-queue`.

use edgeworks_chat_queue::status as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
