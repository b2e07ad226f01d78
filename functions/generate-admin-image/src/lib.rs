//! `generate-admin-image`: wiring only. The logic lives in `systems/media`.

use edgeworks_media::generate_admin_image as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
