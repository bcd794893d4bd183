//! Per-principal request rates, so that a noisy app cannot starve its neighbours on a shared
//! sidecar (WIRE.md, "Throttling"). Each authenticated principal has a token bucket per action
//! class – cryptographic operations, secret reads, management – refilled at the configured rate
//! and holding at most `burst_seconds` of it. A request over the rate is answered 429
//! `Rejected.Throttling` with `x-acs-retry-after: <ms>`, the wait until a token is there, which
//! Alibaba's SDKs honour (py-tea raises ThrottlingException; the secrets-manager client and the
//! encryption SDK back off and retry).
//!
//! Unauthenticated requests are never counted: they cost a signature check at most, and the
//! connection limits (`conn.rs`) bound them. Buckets exist only for configured principals' keys
//! that authenticated, so memory is bounded by the access keys the sidecar knows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use kms_core::api::Action;
use kms_core::KmsError;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

/// Requests per second for each class; 0 (the default) is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rates {
    /// Encrypt, Decrypt, GenerateDataKey*, ReEncrypt, Asymmetric*, ExportDataKey, …
    pub crypto_per_second: f64,
    /// GetSecretValue, BatchGetSecretValue.
    pub secrets_per_second: f64,
    /// Everything else (key, alias, secret and tag management, listings).
    pub management_per_second: f64,
}

/// `[throttling]`: the rates every principal gets, and overrides for some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// The default rates of every principal, as in [`Rates`].
    pub crypto_per_second: f64,
    pub secrets_per_second: f64,
    pub management_per_second: f64,
    /// How many seconds of its rate a principal may spend at once (the bucket's size).
    pub burst_seconds: f64,
    /// Per-principal rates (`"user:batch" = { crypto_per_second = 5000 }`), replacing the
    /// defaults above for that principal.
    pub principals: HashMap<String, Rates>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            crypto_per_second: 0.0,
            secrets_per_second: 0.0,
            management_per_second: 0.0,
            burst_seconds: 1.0,
            principals: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    Crypto,
    Secrets,
    Management,
}

fn class(action: Action) -> Class {
    use Action::*;
    match action {
        Encrypt
        | Decrypt
        | ReEncrypt
        | GenerateDataKey
        | GenerateDataKeyWithoutPlaintext
        | ExportDataKey
        | GenerateAndExportDataKey
        | AsymmetricEncrypt
        | AsymmetricDecrypt
        | AsymmetricSign
        | AsymmetricVerify => Class::Crypto,
        GetSecretValue | BatchGetSecretValue => Class::Secrets,
        _ => Class::Management,
    }
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Crypto => "cryptographic operations",
            Class::Secrets => "secret reads",
            Class::Management => "management actions",
        }
    }
}

impl Rates {
    fn of(&self, c: Class) -> f64 {
        match c {
            Class::Crypto => self.crypto_per_second,
            Class::Secrets => self.secrets_per_second,
            Class::Management => self.management_per_second,
        }
    }

    fn unlimited(&self) -> bool {
        [self.crypto_per_second, self.secrets_per_second, self.management_per_second].iter().all(|r| *r <= 0.0)
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Throttle {
    /// Nothing configured: every request passes without a lock.
    off: AtomicBool,
    settings: RwLock<Settings>,
    /// Per principal label, a bucket per class (looked up by `&str`: no allocation per request).
    buckets: Mutex<HashMap<String, [Option<Bucket>; 3]>>,
}

/// The rates in force: replaced whole on reload.
struct Settings {
    /// The configured defaults.
    rates: Rates,
    /// Overrides by canonical principal label.
    principals: HashMap<String, Rates>,
    burst_seconds: f64,
}

impl Settings {
    /// Checks `cfg`; also says whether it limits nothing.
    fn parse(cfg: ThrottleConfig) -> Result<(Settings, bool), String> {
        let rates = Rates {
            crypto_per_second: cfg.crypto_per_second,
            secrets_per_second: cfg.secrets_per_second,
            management_per_second: cfg.management_per_second,
        };
        let all = std::iter::once(&rates).chain(cfg.principals.values());
        for r in all.clone() {
            let bad = [r.crypto_per_second, r.secrets_per_second, r.management_per_second]
                .into_iter()
                .any(|v| !v.is_finite() || v < 0.0);
            if bad {
                return Err("throttling: rates are requests per second, 0 or more (0: unlimited)".into());
            }
        }
        if !cfg.burst_seconds.is_finite() || cfg.burst_seconds <= 0.0 {
            return Err("throttling: burst_seconds must be more than 0".into());
        }
        // Keyed by the principal's canonical label, as requests are counted (`service:OSS` is
        // `service:oss`).
        let mut principals = HashMap::new();
        for (p, r) in &cfg.principals {
            let parsed = crate::config::parse_principal(p).map_err(|e| format!("throttling.principals: {e}"))?;
            principals.insert(kms_core::Caller::new(parsed).label(), *r);
        }
        let off = all.into_iter().all(Rates::unlimited);
        Ok((Settings { rates, principals, burst_seconds: cfg.burst_seconds }, off))
    }
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig) -> Result<Throttle, String> {
        let (settings, off) = Settings::parse(cfg)?;
        Ok(Throttle { off: AtomicBool::new(off), settings: RwLock::new(settings), buckets: Mutex::new(HashMap::new()) })
    }

    /// Puts new rates in force (SIGHUP). A bad configuration changes nothing. Buckets keep
    /// what they hold, capped at the new size on their next use, so a reload neither grants a
    /// fresh burst nor takes away what a principal had saved up.
    pub fn reload(&self, cfg: ThrottleConfig) -> Result<(), String> {
        let (settings, off) = Settings::parse(cfg)?;
        *self.settings.write() = settings;
        self.off.store(off, Ordering::Release);
        Ok(())
    }

    /// Admits one request of `principal` (its label: `owner`, `user:app`, …) for `action`, or
    /// says how long to wait.
    pub fn admit(&self, principal: &str, action: Action) -> Result<(), KmsError> {
        if self.off.load(Ordering::Acquire) {
            return Ok(());
        }
        let c = class(action);
        let (rate, burst_seconds) = {
            let s = self.settings.read();
            (s.principals.get(principal).unwrap_or(&s.rates).of(c), s.burst_seconds)
        };
        if rate <= 0.0 {
            return Ok(());
        }
        // At least one request fits in the bucket, whatever the rate and burst.
        let capacity = (rate * burst_seconds).max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(principal) {
            buckets.insert(principal.to_string(), [None, None, None]);
        }
        let slot = &mut buckets.get_mut(principal).expect("inserted above")[c as usize];
        let b = slot.get_or_insert(Bucket { tokens: capacity, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait_ms = ((1.0 - b.tokens) / rate * 1000.0).ceil() as u64;
        Err(KmsError::throttled(
            wait_ms,
            format_args!(
                "{principal} is over its {rate} requests per second for {} ({action}); retry in {wait_ms} ms",
                c.name()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(toml: &str) -> Throttle {
        Throttle::new(toml::from_str(toml).unwrap()).unwrap()
    }

    #[test]
    fn a_principal_over_its_rate_waits_and_its_neighbours_do_not() {
        let t = throttle("crypto_per_second = 10\nburst_seconds = 0.5\n[principals]\n\"user:batch\" = { crypto_per_second = 1000 }\n");
        for _ in 0..5 {
            t.admit("user:app", Action::Encrypt).unwrap();
        }
        let e = t.admit("user:app", Action::Encrypt).unwrap_err();
        assert_eq!(e.code().code(), "Rejected.Throttling");
        assert_eq!(e.http_status(), 429);
        let wait = e.retry_after_ms().unwrap();
        assert!((1..=100).contains(&wait), "{wait}");
        // Other classes, other principals, and the overridden one are unaffected.
        t.admit("user:app", Action::ListKeys).unwrap();
        t.admit("user:other", Action::Encrypt).unwrap();
        for _ in 0..400 {
            t.admit("user:batch", Action::Decrypt).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(wait + 5));
        t.admit("user:app", Action::Encrypt).expect("a token after the wait it was told");
    }

    #[test]
    fn nothing_configured_is_unlimited_and_bad_settings_are_refused() {
        let t = throttle("");
        assert!(t.off.load(Ordering::Relaxed));
        for _ in 0..10_000 {
            t.admit("owner", Action::Encrypt).unwrap();
        }
        for bad in ["crypto_per_second = -1", "burst_seconds = 0", "[principals]\n\"root\" = {}"] {
            assert!(Throttle::new(toml::from_str(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_reload_puts_new_rates_in_force_and_a_bad_one_changes_nothing() {
        let t = throttle("crypto_per_second = 2\nburst_seconds = 1\n");
        t.admit("user:app", Action::Encrypt).unwrap();
        t.admit("user:app", Action::Encrypt).unwrap();
        assert!(t.admit("user:app", Action::Encrypt).is_err());
        assert!(t.reload(toml::from_str("crypto_per_second = -5").unwrap()).is_err());
        assert!(t.admit("user:app", Action::Encrypt).is_err(), "the refused reload left the old rate");
        t.reload(toml::from_str("").unwrap()).unwrap();
        for _ in 0..100 {
            t.admit("user:app", Action::Encrypt).unwrap();
        }
        // One token per 100 s, a bucket of one: only a bucket refilled by the reload would admit.
        t.reload(toml::from_str("crypto_per_second = 0.01\nburst_seconds = 100\n").unwrap()).unwrap();
        assert!(
            t.admit("user:app", Action::Encrypt).is_err(),
            "the bucket kept what it held (nothing): a reload grants no fresh burst"
        );
    }
}
