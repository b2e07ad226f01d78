//! `upload-handler` (POST initialise, GET status and resume, PUT part progress or completion; a signed-in user): presigned uploads checked against storage.
//! The logic lives in `systems/uploads`.

use edgeworks_service::export_handler;
use edgeworks_uploads::upload as system;

export_handler!(system::handle, system::ROUTE);
