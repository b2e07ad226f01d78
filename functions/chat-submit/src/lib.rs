//! `chat-submit` (POST, a signed-in user): validate and clean the question,
//! then one SQL call enqueues it. The logic lives in `systems/chat-queue`.

use edgeworks_chat_queue::submit as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
