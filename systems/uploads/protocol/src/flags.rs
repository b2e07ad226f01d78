//! Feature flags per user: a flag that is enabled is on for its targeted
//! users, and for a user whose bucket (a deterministic hash of the flag and
//! the user, 0..100) is below the rollout percentage. The same user always
//! lands in the same bucket of a flag, so raising the percentage only adds
//! users; different flags put one user in unrelated buckets.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A row of `feature_flags`.
#[derive(Debug, Clone, Deserialize)]
pub struct FeatureFlag {
    /// The flag's name.
    pub name: String,
    /// Off switch for everyone, targets included.
    pub is_enabled: bool,
    /// 0..=100.
    pub rollout_percentage: i64,
    /// Users for whom the flag is on whatever the percentage.
    #[serde(default)]
    pub target_user_ids: Vec<String>,
}

/// The user's bucket for a flag: the first four bytes of
/// SHA-256(`"{flag}:{user}"`), big-endian, modulo 100.
pub fn rollout_bucket(flag: &str, user_id: &str) -> u8 {
    let digest = Sha256::digest(format!("{flag}:{}", user_id.to_ascii_lowercase()).as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (n % 100) as u8
}

impl FeatureFlag {
    /// Whether the flag is on for `user_id`.
    pub fn is_on_for(&self, user_id: &str) -> bool {
        if !self.is_enabled {
            return false;
        }
        if self.target_user_ids.iter().any(|t| t.eq_ignore_ascii_case(user_id)) {
            return true;
        }
        i64::from(rollout_bucket(&self.name, user_id)) < self.rollout_percentage.clamp(0, 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(pct: i64) -> FeatureFlag {
        FeatureFlag {
            name: "llama_parse_integration".into(),
            is_enabled: true,
            rollout_percentage: pct,
            target_user_ids: vec![],
        }
    }

    fn user(i: u32) -> String {
        format!("00000000-0000-4000-8000-{i:012}")
    }

    #[test]
    fn the_bucket_is_deterministic_and_pinned() {
        assert_eq!(rollout_bucket("f", "u"), rollout_bucket("f", "u"));
        // SHA-256("f:u") starts 8b 2c 4b 3c: 0x8b2c4b3c % 100 = 68. Pinned so the
        // rule (which any other evaluator of these flags must repeat) cannot drift.
        assert_eq!(rollout_bucket("f", "u"), 68);
        assert_eq!(
            rollout_bucket("llama_parse_integration", "00000000-0000-4000-8000-000000000001"),
            56
        );
        assert_eq!(rollout_bucket("f", "ABC"), rollout_bucket("f", "abc"));
    }

    #[test]
    fn zero_and_hundred_percent_are_nobody_and_everybody() {
        assert!((0..200).all(|i| !flag(0).is_on_for(&user(i))));
        assert!((0..200).all(|i| flag(100).is_on_for(&user(i))));
    }

    #[test]
    fn raising_the_rollout_only_adds_users_and_roughly_hits_the_share() {
        let users: Vec<String> = (0..2000).map(user).collect();
        let on = |pct| {
            users
                .iter()
                .filter(|u| flag(pct).is_on_for(u))
                .cloned()
                .collect::<Vec<_>>()
        };
        let (ten, thirty) = (on(10), on(30));
        assert!(ten.iter().all(|u| thirty.contains(u)));
        assert!((100..300).contains(&ten.len()), "{}", ten.len());
        assert!((450..750).contains(&thirty.len()), "{}", thirty.len());
    }

    #[test]
    fn targets_are_on_while_enabled_and_a_disabled_flag_is_off_for_all() {
        let mut f = flag(0);
        f.target_user_ids = vec![user(7)];
        assert!(f.is_on_for(&user(7)));
        assert!(!f.is_on_for(&user(8)));
        f.is_enabled = false;
        assert!(!f.is_on_for(&user(7)));
        let mut all = flag(100);
        all.is_enabled = false;
        assert!(!all.is_on_for(&user(1)));
    }
}
