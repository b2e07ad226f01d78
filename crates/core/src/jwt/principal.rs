//! Who is calling, as far as a verified token says.

use serde_json::Value;

use super::{Claims, JwtError};

pub const ROLE_ANON: &str = "anon";
pub const ROLE_AUTHENTICATED: &str = "authenticated";
pub const ROLE_SERVICE_ROLE: &str = "service_role";

#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// `sub` of an `authenticated` token; `None` for anon and service role.
    pub user_id: Option<String>,
    /// One of [`ROLE_ANON`], [`ROLE_AUTHENTICATED`], [`ROLE_SERVICE_ROLE`].
    pub role: String,
    pub email: Option<String>,
    /// `app_metadata` is only writable server-side, so it may carry
    /// authorisation facts (plan, admin flags). `Null` when absent.
    pub app_metadata: Value,
    pub is_service_role: bool,
}

impl Principal {
    /// Accepts only the three Supabase API roles; a user token must name
    /// its user.
    pub fn from_claims(claims: &Claims) -> Result<Principal, JwtError> {
        let role = claims.role().ok_or(JwtError::RoleNotAllowed)?;
        if ![ROLE_ANON, ROLE_AUTHENTICATED, ROLE_SERVICE_ROLE].contains(&role) {
            return Err(JwtError::RoleNotAllowed);
        }
        let user_id = if role == ROLE_AUTHENTICATED {
            match claims.sub() {
                Some(sub) if !sub.trim().is_empty() => Some(sub.to_string()),
                _ => return Err(JwtError::MissingSubject),
            }
        } else {
            None
        };
        let app_metadata = match claims.get("app_metadata") {
            Some(v @ Value::Object(_)) => v.clone(),
            _ => Value::Null,
        };
        Ok(Principal {
            user_id,
            role: role.to_string(),
            email: claims.email().map(str::to_string),
            app_metadata,
            is_service_role: role == ROLE_SERVICE_ROLE,
        })
    }

    pub fn is_authenticated(&self) -> bool {
        self.user_id.is_some()
    }
}
