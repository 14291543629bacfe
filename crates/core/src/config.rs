//! Source options and credentials, checked once when a source is created or
//! altered and again before each sync. Unknown keys are errors: a typo in an
//! option must not silently fall back to a default. This module knows no
//! provider: `connectors::configure` hands it the provider's keys and runs
//! the provider's own checks between [`SourceConfig::check_keys`] and
//! [`SourceConfig::parse`].

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{CrmError, Result};
use crate::http::{check_url_allowed, HttpSettings};

/// Options every provider understands (HTTP behaviour and sync behaviour).
pub const COMMON_OPTIONS: &[&str] = &[
    "timeout_seconds",
    "max_retries",
    "retry_base_ms",
    "retry_max_ms",
    "lookback_seconds",
    "track_deletes",
    "default_region",
    "max_response_mb",
    "reconcile_every",
];

/// A source's options and credentials: JSON objects.
pub type Settings<'a> = (&'a Map<String, Value>, &'a Map<String, Value>);

/// A source's checked settings: the common ones parsed, the provider's own
/// kept as given (its connector reads them; the provider's check vetted them).
#[derive(Clone)]
pub struct SourceConfig {
    /// The provider's name, for messages.
    pub provider: String,
    pub options: Map<String, Value>,
    pub credentials: Map<String, Value>,
    pub http: HttpSettings,
    /// Incremental runs start this far before the watermark (index lag).
    pub lookback: Duration,
    /// Look for deleted/archived records on every run.
    pub track_deletes: bool,
    /// How often an incremental sync also reconciles the stream's ids with
    /// the CRM's (`crm_sync.reconcile`); None: only when called.
    pub reconcile_every: Option<Duration>,
}

/// Shows credential keys only: their values are secrets.
impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("provider", &self.provider)
            .field("options", &self.options)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .field("http", &self.http)
            .field("lookback", &self.lookback)
            .field("track_deletes", &self.track_deletes)
            .field("reconcile_every", &self.reconcile_every)
            .finish()
    }
}

/// How far before the watermark an incremental run starts, unless the
/// source says: HubSpot's search is an index that takes changes in late and
/// out of order near the present (Estuary keeps its consistent HubSpot
/// stream an hour behind for this: estuary/connectors#1861, #1871, #2210,
/// #4595), so its runs read the last hour again; Salesforce's
/// `SystemModstamp` lags only by commit time, a minute is plenty.
pub fn default_lookback(provider: &str) -> u64 {
    match provider {
        "hubspot" => 3_600,
        _ => 60,
    }
}

/// A day: an incremental sync reconciles a stream's ids once a day unless
/// told otherwise. Listing 1,000,000 HubSpot contacts takes 10,000 calls,
/// 1.6% of a Professional portal's 625,000 a day; records erased for GDPR
/// or purged after HubSpot's 90-day restore window leave no other trace,
/// and a day is the longest a ghost of one should stay.
pub const DEFAULT_RECONCILE_EVERY: Duration = Duration::from_secs(86_400);

const RECONCILE_HINT: &str = "Set it to a duration such as \"1 day\", \"12 hours\" or \"30 minutes\" (how often an incremental sync also runs crm_sync.reconcile), or \"off\".";

/// `"1 day"`, `"12 hours"`, `"30 min"`, `"90 s"`, `"2 weeks"`, or `"off"`
/// (None).
pub fn every(v: &str) -> std::result::Result<Option<Duration>, String> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{v:?} is not a duration"))?;
    let secs = match unit.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return Err(format!("{v:?} is not a duration")),
    };
    match n.checked_mul(secs) {
        Some(t) if t <= 366 * 86_400 => Ok(Some(Duration::from_secs(t))),
        _ => Err(format!("{v:?} is longer than a year")),
    }
}

impl SourceConfig {
    /// `options` and `credentials` as JSON objects whose keys are all known:
    /// the provider's `own_options` or a common one, and its `credential_keys`.
    pub fn check_keys<'a>(
        provider: &str,
        own_options: &[&str],
        credential_keys: &[&str],
        options: &'a Value,
        credentials: &'a Value,
    ) -> Result<Settings<'a>> {
        let opts = object(options, "options")?;
        let creds = object(credentials, "credentials")?;
        for k in opts.keys() {
            if !own_options.contains(&k.as_str()) && !COMMON_OPTIONS.contains(&k.as_str()) {
                let mut known: Vec<&str> = own_options.to_vec();
                known.extend_from_slice(COMMON_OPTIONS);
                return Err(CrmError::config(format!(
                    "unknown option {k:?} for provider {provider}"
                ))
                .with_hint(format!("Known options: {}.", known.join(", "))));
            }
        }
        for k in creds.keys() {
            if !credential_keys.contains(&k.as_str()) {
                // Name the key, never the value.
                return Err(CrmError::config(format!(
                    "unknown credential {k:?} for provider {provider}"
                ))
                .with_hint(format!(
                    "Known credentials: {}.",
                    credential_keys.join(", ")
                )));
            }
        }
        Ok((opts, creds))
    }

    /// Parse the options every provider understands. `allow_insecure_http`
    /// comes from the `crm_sync.allow_insecure_http` setting.
    pub fn parse(
        provider: &str,
        opts: &Map<String, Value>,
        creds: &Map<String, Value>,
        allow_insecure_http: bool,
    ) -> Result<SourceConfig> {
        let d = HttpSettings::default();
        let http = HttpSettings {
            timeout: Duration::from_secs(
                int(opts, "timeout_seconds", 1, 3600)?.unwrap_or(d.timeout.as_secs()),
            ),
            max_retries: int(opts, "max_retries", 0, 20)?.map_or(d.max_retries, |v| v as u32),
            retry_base: Duration::from_millis(
                int(opts, "retry_base_ms", 1, 60_000)?.unwrap_or(d.retry_base.as_millis() as u64),
            ),
            retry_max: Duration::from_millis(
                int(opts, "retry_max_ms", 1, 600_000)?.unwrap_or(d.retry_max.as_millis() as u64),
            ),
            allow_insecure_http,
            allowed_networks: Vec::new(),
            max_body_bytes: int(opts, "max_response_mb", 1, 4096)?
                .map_or(d.max_body_bytes, |mb| mb * 1024 * 1024),
        };
        let lookback = Duration::from_secs(
            int(opts, "lookback_seconds", 0, 86_400)?.unwrap_or(default_lookback(provider)),
        );
        let track_deletes = boolean(opts, "track_deletes")?.unwrap_or(true);
        let reconcile_every = match opts.get("reconcile_every") {
            None | Some(Value::Null) => Some(DEFAULT_RECONCILE_EVERY),
            Some(Value::String(v)) => every(v).map_err(|e| {
                CrmError::config(format!("option reconcile_every: {e}")).with_hint(RECONCILE_HINT)
            })?,
            Some(v) => {
                return Err(CrmError::config(format!(
                "option reconcile_every must be a duration such as \"1 day\" or \"off\", not {v}"
            ))
                .with_hint(RECONCILE_HINT))
            }
        };
        // Phone numbers without a country code are read in this region by
        // the unified model; checked here so a typo fails at create_source.
        match opts.get("default_region") {
            None | Some(Value::Null) => {}
            Some(Value::String(r)) if crate::model::clean::country(r).is_ok_and(|c| c.is_some()) => {}
            Some(v) => {
                return Err(CrmError::config(format!(
                    "option default_region must be a country (ISO 3166 code or name), not {v}"
                ))
                .with_hint("For example \"US\", \"GB\" or \"DE\": the region of phone numbers written without a country code."))
            }
        }
        Ok(SourceConfig {
            provider: provider.to_owned(),
            options: opts.clone(),
            credentials: creds.clone(),
            http,
            lookback,
            track_deletes,
            reconcile_every,
        })
    }

    /// Every secret value, for scrubbing messages.
    pub fn secrets(&self) -> Vec<String> {
        self.credentials
            .values()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// A string option, if set.
    pub fn option_str(&self, key: &str) -> Option<&str> {
        self.options.get(key).and_then(Value::as_str)
    }

    /// A string credential, if set.
    pub fn credential(&self, key: &str) -> Option<&str> {
        self.credentials.get(key).and_then(Value::as_str)
    }

    /// A boolean option (already checked by the provider with [`boolean`]).
    pub fn option_bool(&self, key: &str) -> Option<bool> {
        self.options.get(key).and_then(Value::as_bool)
    }

    /// An integer option (already range-checked by the provider).
    pub fn option_u64(&self, key: &str) -> Option<u64> {
        self.options.get(key).and_then(Value::as_u64)
    }
}

/// Check an optional URL option: absolute, and `http://` only where allowed.
pub fn check_url_option(
    opts: &Map<String, Value>,
    key: &str,
    example: &str,
    allow_insecure_http: bool,
) -> Result<()> {
    let s = match opts.get(key) {
        None => return Ok(()),
        Some(Value::String(s)) => s,
        Some(_) => return Err(CrmError::config(format!("options.{key} must be a string"))),
    };
    let url = url::Url::parse(s).map_err(|e| {
        CrmError::config(format!("options.{key} {s:?} is not a valid URL: {e}"))
            .with_hint(format!("Use an absolute URL such as {example}."))
    })?;
    check_url_allowed(&url, allow_insecure_http)
}

/// A credential that must be a non-empty string; errors name the key only.
pub fn require_credential<'a>(
    creds: &'a Map<String, Value>,
    provider: &str,
    key: &str,
    hint: &str,
) -> Result<&'a str> {
    match creds.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(
            CrmError::config(format!("credentials.{key} must be a non-empty string"))
                .with_hint(hint),
        ),
        None => Err(
            CrmError::config(format!("provider {provider} needs credentials.{key}"))
                .with_hint(hint),
        ),
    }
}

/// An optional boolean option.
pub fn boolean(opts: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match opts.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(CrmError::config(format!(
            "options.{key} must be true or false"
        ))),
    }
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| CrmError::config(format!("{what} must be a JSON object")))
}

/// An optional integer option within `min..=max`.
pub fn int(opts: &Map<String, Value>, key: &str, min: u64, max: u64) -> Result<Option<u64>> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(CrmError::config(format!(
                "options.{key} must be an integer from {min} to {max}"
            ))),
        },
    }
}

/// A credential given by reference, so that its value never appears in SQL
/// text (statement logs, `pg_stat_activity`): read where the server runs,
/// each time it is used. Only a superuser may store one (it reads the
/// server's environment and files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `{"env": "NAME"}`: an environment variable of the server process.
    Env(String),
    /// `{"file": "/path"}`: a file the server can read (trailing newline
    /// dropped).
    File(String),
}

impl SecretRef {
    /// The reference a credential value is, if it is one; `Err` for an
    /// object that is no valid reference.
    pub fn of(key: &str, v: &Value) -> Option<Result<SecretRef>> {
        let m = v.as_object()?;
        let bad = |why: &str| {
            Some(Err(CrmError::config(format!(
                "credentials.{key} is not a valid reference: {why}"
            ))
            .with_hint(
                "Give a value, {\"env\": \"VARIABLE\"} (the server's environment) or {\"file\": \"/absolute/path\"} (a file the server can read).",
            )))
        };
        if m.len() != 1 {
            return bad("one key, env or file");
        }
        match m.iter().next() {
            Some((k, Value::String(name))) if k == "env" => {
                let ok = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if ok {
                    Some(Ok(SecretRef::Env(name.clone())))
                } else {
                    bad("an environment variable name is letters, digits and _")
                }
            }
            Some((k, Value::String(path))) if k == "file" => {
                if path.starts_with('/') {
                    Some(Ok(SecretRef::File(path.clone())))
                } else {
                    bad("the file's path must be absolute")
                }
            }
            _ => bad("one key, env or file, with a string"),
        }
    }
}

/// Whether any credential is given by reference.
pub fn has_secret_refs(credentials: &Value) -> bool {
    credentials
        .as_object()
        .is_some_and(|m| m.iter().any(|(k, v)| SecretRef::of(k, v).is_some()))
}

/// The credentials with every reference replaced by what `read` finds for
/// it; errors name the key and the reference, never a value.
pub fn resolve_secrets(
    credentials: &Value,
    read: &mut dyn FnMut(&SecretRef) -> std::result::Result<String, String>,
) -> Result<Value> {
    let Some(m) = credentials.as_object() else {
        return Ok(credentials.clone());
    };
    let mut out = Map::new();
    for (k, v) in m {
        let value = match SecretRef::of(k, v) {
            None => v.clone(),
            Some(r) => {
                let r = r?;
                let found = read(&r).map_err(|why| {
                    let what = match &r {
                        SecretRef::Env(n) => format!("environment variable {n}"),
                        SecretRef::File(p) => format!("file {p}"),
                    };
                    CrmError::config(format!("credentials.{k}: {what}: {why}"))
                        .with_hint("Set it where the PostgreSQL server runs, or give the credential as a value.")
                })?;
                Value::String(found)
            }
        };
        out.insert(k.clone(), value);
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_resolved_and_errors_name_no_value() {
        let creds = json!({"client_id": "abc", "client_secret": {"env": "SF_SECRET"},
                           "refresh_token": {"file": "/run/secrets/sf"}});
        assert!(has_secret_refs(&creds));
        assert!(!has_secret_refs(&json!({"access_token": "pat-1"})));
        let mut seen = vec![];
        let out = resolve_secrets(&creds, &mut |r| {
            seen.push(r.clone());
            Ok(match r {
                SecretRef::Env(_) => "s3cret".into(),
                SecretRef::File(_) => "5Aep-token".into(),
            })
        })
        .unwrap();
        assert_eq!(
            out,
            json!({"client_id": "abc", "client_secret": "s3cret", "refresh_token": "5Aep-token"})
        );
        assert_eq!(seen.len(), 2);
        let e = resolve_secrets(&json!({"access_token": {"env": "HS_TOKEN"}}), &mut |_| {
            Err("not set in the server's environment".into())
        })
        .unwrap_err();
        assert!(e
            .message
            .contains("credentials.access_token: environment variable HS_TOKEN: not set"));
    }

    #[test]
    fn bad_references_say_why() {
        for (v, why) in [
            (json!({"env": "1BAD"}), "letters, digits"),
            (json!({"env": "A;rm"}), "letters, digits"),
            (json!({"file": "relative/path"}), "absolute"),
            (json!({"env": "A", "file": "/b"}), "one key"),
            (json!({"url": "http://x"}), "one key"),
        ] {
            let e = SecretRef::of("access_token", &v).unwrap().unwrap_err();
            assert!(e.message.contains(why), "{v}: {}", e.message);
        }
        assert!(SecretRef::of("access_token", &json!("pat")).is_none());
    }
}

#[cfg(test)]
mod every_tests {
    use super::*;

    #[test]
    fn reconcile_every_reads_durations_and_off() {
        assert_eq!(every("1 day"), Ok(Some(Duration::from_secs(86_400))));
        assert_eq!(every(" 12 hours "), Ok(Some(Duration::from_secs(43_200))));
        assert_eq!(every("30min"), Ok(Some(Duration::from_secs(1_800))));
        assert_eq!(every("0 s"), Ok(Some(Duration::ZERO)));
        assert_eq!(every("OFF"), Ok(None));
        assert!(every("daily").is_err());
        assert!(every("5 fortnights").is_err());
        assert!(every("400 days").is_err());
        assert!(every("-1 h").is_err());
    }

    #[test]
    fn hubspot_reads_the_last_hour_again_salesforce_the_last_minute() {
        let parse = |p: &str, o: Value| {
            SourceConfig::parse(p, o.as_object().unwrap(), &Map::new(), false).unwrap()
        };
        assert_eq!(
            parse("hubspot", serde_json::json!({})).lookback,
            Duration::from_secs(3_600)
        );
        assert_eq!(
            parse("salesforce", serde_json::json!({})).lookback,
            Duration::from_secs(60)
        );
        let set = parse("hubspot", serde_json::json!({"lookback_seconds": 5}));
        assert_eq!(set.lookback, Duration::from_secs(5));
    }

    #[test]
    fn reconcile_every_defaults_to_a_day_and_is_checked() {
        let parse =
            |o: Value| SourceConfig::parse("hubspot", o.as_object().unwrap(), &Map::new(), false);
        let d = parse(serde_json::json!({})).unwrap();
        assert_eq!(d.reconcile_every, Some(DEFAULT_RECONCILE_EVERY));
        let off = parse(serde_json::json!({"reconcile_every": "off"})).unwrap();
        assert_eq!(off.reconcile_every, None);
        let e = parse(serde_json::json!({"reconcile_every": 5})).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidConfig);
        assert!(e.hint.unwrap().contains("1 day"));
    }
}
