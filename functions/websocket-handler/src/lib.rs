//! `websocket-handler`: wiring only. The logic lives in `systems/ai-chat`
//! (a live room per conversation: fan-out through Realtime broadcast,
//! typing, presence, resume by sequence number).

use edgeworks_ai_chat::websocket_handler as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
