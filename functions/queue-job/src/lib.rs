//! `queue-job`: wiring only. The logic lives in `systems/media`.

use edgeworks_media::queue_job as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
