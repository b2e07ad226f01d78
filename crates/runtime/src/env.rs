//! The function's environment, handed in by the shim on every call. Nothing
//! here reads a global: a test passes whatever environment it wants.

use std::collections::BTreeMap;
use std::rc::Rc;

use edgeworks_core::cors::CorsPolicy;
use edgeworks_core::redact::Redactor;
use edgeworks_core::ApiError;

/// Environment variables; an empty value counts as unset.
///
/// Shared, not copied: an isolate converts its environment once and every
/// request's `Env` is a clone of that one (a reference count), with the log
/// redactor derived from it built once too.
#[derive(Debug, Clone)]
pub struct Env(Rc<Vars>);

impl Default for Env {
    fn default() -> Self {
        // The instantiation the shim's conversion uses (convert.rs): another
        // pair type would link a second copy of `from_pairs`.
        Env::from_pairs(Vec::<(String, String)>::new())
    }
}

#[derive(Debug)]
struct Vars {
    vars: BTreeMap<String, String>,
    fingerprint: u64,
    redactor: Rc<Redactor>,
    cors: CorsPolicy,
    function: Rc<str>,
}

impl Env {
    /// An environment of these variables.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let vars: BTreeMap<String, String> = pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        // FNV-1a over the sorted pairs: equal environments, equal fingerprints.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in &vars {
            for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        let redactor = Rc::new(Redactor::from_env(vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        let cors = CorsPolicy::from_env_value(vars.get("CORS_ALLOWED_ORIGINS").map(String::as_str));
        let function = match vars.get("EDGEWORKS_FUNCTION").map(String::as_str) {
            Some(name) if !name.is_empty() => name.into(),
            _ => "function".into(),
        };
        Env(Rc::new(Vars {
            vars,
            fingerprint: h,
            redactor,
            cors,
            function,
        }))
    }

    /// Identifies this set of variables, so what is parsed from it can be
    /// cached for as long as it is unchanged (the shim hands the same
    /// environment to every request of an isolate).
    pub fn fingerprint(&self) -> u64 {
        self.0.fingerprint
    }

    /// A variable, unless unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
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

    /// A variable parsed as `T`, or `default` when unset or unparsable.
    pub fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.get(name).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
    }

    /// The log redactor for this environment's secrets (built with the `Env`).
    pub fn redactor(&self) -> Rc<Redactor> {
        self.0.redactor.clone()
    }

    /// The CORS policy of `CORS_ALLOWED_ORIGINS` (parsed with the `Env`).
    pub fn cors(&self) -> &CorsPolicy {
        &self.0.cors
    }

    /// The function's name (`EDGEWORKS_FUNCTION`, `function` when unset),
    /// shared with every request's logger rather than copied for each.
    pub fn function(&self) -> Rc<str> {
        self.0.function.clone()
    }

    /// Every variable.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A lookup function for parsers that take one (`Settings::from_lookup`).
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |k| self.get(k).map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_name_is_edgeworks_function_or_function() {
        assert_eq!(&*Env::default().function(), "function");
        assert_eq!(&*Env::from_pairs([("EDGEWORKS_FUNCTION", "")]).function(), "function");
        assert_eq!(
            &*Env::from_pairs([("EDGEWORKS_FUNCTION", "health")]).function(),
            "health"
        );
    }
}
