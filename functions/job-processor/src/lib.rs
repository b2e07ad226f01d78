//! `job-processor`: wiring only. The logic lives in `systems/pipelines`.

use edgeworks_pipelines::job_processor as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
