//! `social-connect`: wiring only. The logic lives in `systems/pipelines`.

use edgeworks_pipelines::social_connect as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
