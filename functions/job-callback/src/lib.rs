//! `job-callback`: wiring only. The logic lives in `systems/media`.

use edgeworks_media::job_callback as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
