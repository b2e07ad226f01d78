//! `run-pipelines`: wiring only. The logic lives in `systems/pipelines`.

use edgeworks_pipelines::run_pipelines as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
