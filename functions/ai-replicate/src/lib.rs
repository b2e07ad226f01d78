//! `ai-replicate`: wiring only. The logic lives in `systems/pipelines`.

use edgeworks_pipelines::ai_replicate as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
