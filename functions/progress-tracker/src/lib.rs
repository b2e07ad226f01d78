//! `progress-tracker` (POST a report: service role or signed internal webhook; GET progress with ETA: the owner; DELETE reset).
//! The logic lives in `systems/uploads`.

use edgeworks_service::export_handler;
use edgeworks_uploads::tracker as system;

export_handler!(system::handle, system::ROUTE);
