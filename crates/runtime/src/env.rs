//! The function's environment, handed in by the shim on every call. Nothing
//! here reads a global: a test passes whatever environment it wants.

use std::collections::BTreeMap;

use edgeworks_core::redact::Redactor;
use edgeworks_core::ApiError;

#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Env {
            vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The first of several names that is set (e.g. SUPABASE_JWT_SECRET, JWT_SECRET).
    pub fn first_of(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.get(n))
    }

    /// A required variable. The error names the variable, never a value.
    pub fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| {
            ApiError::new(
                500,
                "misconfigured",
                format!("the function is missing configuration: {name}"),
            )
        })
    }

    pub fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.get(name).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
    }

    pub fn redactor(&self) -> Redactor {
        Redactor::from_env(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
