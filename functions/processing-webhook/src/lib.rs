//! `processing-webhook` (POST, Standard Webhooks signature per source): a step progressed, finished or failed.
//! The logic lives in `systems/uploads`.

use edgeworks_service::export_handler;
use edgeworks_uploads::webhook as system;

export_handler!(system::handle, system::ROUTE);
