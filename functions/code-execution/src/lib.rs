//! `code-execution`: wiring only. The logic lives in `systems/code-execution`.

use edgeworks_code_execution::code_execution as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
