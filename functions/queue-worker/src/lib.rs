//! `queue-worker` (POST, service role): the one worker for every system's
//! job kinds. The logic lives in `systems/operations`.

use edgeworks_operations::queue_worker as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
