//! Who is calling, as far as a verified token says, and which verified
//! tokens count as a caller at all (audience, issuer, subject).
//!
//! What Supabase issues, and so what we accept:
//! - User access tokens from Supabase Auth: `role: authenticated`,
//!   `aud: authenticated`, `iss: {SUPABASE_URL}/auth/v1`, `sub` = the user's
//!   uuid (the primary key of `auth.users`).
//! - The project's API keys (the legacy anon and service_role JWTs): `iss:
//!   supabase` (`supabase-demo` from the CLI), `ref`, `role`, `iat`, `exp`;
//!   no `aud`, no `sub`. A token claiming one of these roles while carrying
//!   an audience or a subject was minted for someone else (or forged by a
//!   signer pretending a user token is a key) and is refused, so a token with
//!   `role: service_role, aud: authenticated` is never the service role.

use serde_json::Value;

use super::{Claims, JwtError};
use edgeworks_core::ids::is_uuid;

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

/// The audiences and issuers a deployment accepts on user tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// A user token must name at least one of these in `aud`.
    audiences: Vec<String>,
    /// A user token's `iss` must be one of these; empty = not checked
    /// (no `SUPABASE_URL` and no `JWT_ISSUERS` to say what it should be).
    issuers: Vec<String>,
}

impl Default for TokenPolicy {
    /// Audience `authenticated`, issuer unchecked.
    fn default() -> Self {
        TokenPolicy {
            audiences: vec![ROLE_AUTHENTICATED.to_string()],
            issuers: Vec::new(),
        }
    }
}

fn comma_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl TokenPolicy {
    /// Comma-separated accepted audiences; default `authenticated`.
    /// (Not `SUPABASE_`-prefixed: Supabase refuses user secrets with that prefix.)
    pub const AUDIENCES_VAR: &'static str = "JWT_AUDIENCES";
    /// Comma-separated accepted issuers; default `{SUPABASE_URL}/auth/v1`.
    /// Needed when tokens are issued under another URL than the one the
    /// functions see as `SUPABASE_URL` (a custom domain).
    pub const ISSUERS_VAR: &'static str = "JWT_ISSUERS";

    pub fn new(audiences: Vec<String>, issuers: Vec<String>) -> TokenPolicy {
        TokenPolicy { audiences, issuers }
    }

    /// From `JWT_AUDIENCES`, `JWT_ISSUERS` and `SUPABASE_URL`. An empty or
    /// blank variable counts as unset, so a policy never accepts nothing by
    /// accident, nor everything.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> TokenPolicy {
        let mut policy = TokenPolicy::default();
        if let Some(a) = lookup(Self::AUDIENCES_VAR)
            .map(|v| comma_list(&v))
            .filter(|l| !l.is_empty())
        {
            policy.audiences = a;
        }
        if let Some(i) = lookup(Self::ISSUERS_VAR)
            .map(|v| comma_list(&v))
            .filter(|l| !l.is_empty())
        {
            policy.issuers = i;
        } else if let Some(url) = lookup("SUPABASE_URL")
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
        {
            policy.issuers = vec![format!("{url}/auth/v1")];
        }
        policy
    }

    fn audience_ok(&self, aud: Option<&Value>) -> bool {
        // RFC 7519 §4.1.3: one string or an array of strings.
        match aud {
            Some(Value::String(a)) => self.audiences.iter().any(|x| x == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| self.audiences.iter().any(|x| x == a)),
            _ => false,
        }
    }

    fn issuer_ok(&self, iss: Option<&str>) -> bool {
        if self.issuers.is_empty() {
            return true;
        }
        // Compared without a trailing slash, as configured values are.
        iss.is_some_and(|i| self.issuers.iter().any(|x| x == i.trim_end_matches('/')))
    }
}

impl Principal {
    /// Accepts only the three Supabase API roles. A user token must name its
    /// user by uuid and carry an accepted audience and issuer; an API-key
    /// role must carry neither audience nor subject (see the module docs).
    pub fn from_claims(claims: &Claims, policy: &TokenPolicy) -> Result<Principal, JwtError> {
        let role = claims.role().ok_or(JwtError::RoleNotAllowed)?;
        if ![ROLE_ANON, ROLE_AUTHENTICATED, ROLE_SERVICE_ROLE].contains(&role) {
            return Err(JwtError::RoleNotAllowed);
        }
        let user_id = if role == ROLE_AUTHENTICATED {
            let sub = match claims.sub() {
                Some(sub) if !sub.trim().is_empty() => sub,
                _ => return Err(JwtError::MissingSubject),
            };
            // Supabase user ids are uuids; anything else would reach SQL as
            // a uuid parameter and fail there (a 500), or be a 10 KB key.
            if !is_uuid(sub) {
                return Err(JwtError::BadSubject);
            }
            if !policy.audience_ok(claims.get("aud")) {
                return Err(JwtError::BadAudience);
            }
            if !policy.issuer_ok(claims.iss()) {
                return Err(JwtError::BadIssuer);
            }
            Some(sub.to_ascii_lowercase())
        } else {
            if claims.get("aud").is_some_and(|a| !a.is_null()) {
                return Err(JwtError::BadAudience);
            }
            if claims.get("sub").is_some_and(|s| !s.is_null()) {
                return Err(JwtError::BadSubject);
            }
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
