//! `health` (GET, public): build identity and a timed database round trip.
//! The logic lives in `systems/operations`.

use edgeworks_operations::health as system;
use edgeworks_service::export_handler;

export_handler!(system::health, system::ROUTE);
