//! `chat-completion`: wiring only. The logic lives in `systems/ai-chat`
//! (answers from four providers, streamed or not, stop, resume, budgets,
//! users' own keys).

use edgeworks_ai_chat::chat_completion as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
