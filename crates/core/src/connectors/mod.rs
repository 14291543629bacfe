//! The CRMs pg_crm_sync knows: one folder each, behind the contract in
//! [`crate::source`], and the registry that finds a provider by name and
//! checks a source's settings against it.

pub mod dynamics;
pub mod hubspot;
pub mod rest;
pub mod salesforce;
pub mod zoho;

use serde_json::Value;

use crate::config::SourceConfig;
use crate::error::{CrmError, Result};
use crate::http::HttpClient;
use crate::source::{CheckArgs, Connector, Provider};

/// Every CRM pg_crm_sync knows. Add a line here for a new connector.
pub const PROVIDERS: &[&Provider] = &[
    &hubspot::PROVIDER,
    &salesforce::PROVIDER,
    &dynamics::PROVIDER,
    &zoho::PROVIDER,
    &rest::PROVIDER,
];

/// The provider called `name`.
pub fn find(name: &str) -> Result<&'static Provider> {
    PROVIDERS
        .iter()
        .copied()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            let known: Vec<&str> = PROVIDERS.iter().map(|p| p.name).collect();
            CrmError::config(format!("unknown provider {name:?}"))
                .with_hint(format!("Supported providers: {}.", known.join(", ")))
        })
}

/// When a stream's watermark was taken, for the status views: a time
/// itself, or a connector's cursor that tells one (Dataverse's delta token).
pub fn watermark_time(w: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    crate::types::parse_datetime(w).or_else(|| dynamics::watermark_time(w))
}

/// A source's provider and its checked settings.
#[derive(Debug, Clone)]
pub struct Configured {
    pub provider: &'static Provider,
    pub config: SourceConfig,
}

impl Configured {
    /// Open a connection for one sync or discovery call.
    pub fn connect<'a>(&'a self, http: &'a HttpClient) -> Result<Box<dyn Connector + 'a>> {
        (self.provider.connect)(http, &self.config)
    }
}

/// Check `options` and `credentials` for `provider`: no unknown key, the
/// provider's own checks, then the options every provider understands.
/// `allow_insecure_http` comes from the `crm_sync.allow_insecure_http`
/// setting.
pub fn configure(
    provider: &str,
    options: &Value,
    credentials: &Value,
    allow_insecure_http: bool,
) -> Result<Configured> {
    let provider = find(provider)?;
    if provider.name == rest::PROVIDER.name {
        let spec = options.get("spec").unwrap_or(&Value::Null);
        return configure_rest("rest", spec, options, credentials, allow_insecure_http);
    }
    let (opts, creds) = SourceConfig::check_keys(
        provider.name,
        provider.options,
        provider.credentials,
        options,
        credentials,
    )?;
    (provider.check)(&CheckArgs {
        options: opts,
        credentials: creds,
        allow_insecure_http,
    })?;
    let config = SourceConfig::parse(provider.name, opts, creds, allow_insecure_http)?;
    Ok(Configured { provider, config })
}

/// Check a source of the spec registered as `name` (a provider name that
/// is no built-in connector's): the `rest` connector runs it.
pub fn configure_spec(
    name: &str,
    spec: &Value,
    options: &Value,
    credentials: &Value,
    allow_insecure_http: bool,
) -> Result<Configured> {
    if options.get("spec").is_some() {
        return Err(CrmError::config(format!(
            "a source of the registered spec {name:?} takes no options.spec"
        ))
        .with_hint("Change the spec with crm_sync.register_spec(), or use provider 'rest' with options.spec."));
    }
    configure_rest(name, spec, options, credentials, allow_insecure_http)
}

fn configure_rest(
    name: &str,
    spec: &Value,
    options: &Value,
    credentials: &Value,
    allow_insecure_http: bool,
) -> Result<Configured> {
    let what = if name == "rest" {
        "options.spec".to_owned()
    } else {
        format!("spec {name:?}")
    };
    if spec.is_null() {
        return Err(CrmError::config("provider rest needs options.spec")
            .with_hint("Pass the spec as options => '{\"spec\": {...}}' (docs/specs.md), or use a registered spec's name as the provider."));
    }
    let parsed = rest::spec::Spec::load(&what, spec)?;
    let keys = parsed.credential_keys();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let (opts, creds) = SourceConfig::check_keys(name, rest::OPTIONS, &keys, options, credentials)?;
    rest::check_spec(&parsed, opts, creds, &what, allow_insecure_http)?;
    let mut opts = opts.clone();
    opts.insert("spec".into(), spec.clone());
    let config = SourceConfig::parse(name, &opts, creds, allow_insecure_http)?;
    Ok(Configured {
        provider: &rest::PROVIDER,
        config,
    })
}

/// The origins a source sends credentials to that differ between `old`
/// and `new` options, for a source of a spec (`spec`: the registered one;
/// None: provider `rest`, whose spec is in the options).
pub fn spec_origin_change(
    spec: Option<&Value>,
    old: &Value,
    new: &Value,
) -> Option<(String, String)> {
    let of = |opts: &Value| {
        let s = spec.or_else(|| opts.get("spec")).unwrap_or(&Value::Null);
        rest::origins(s, opts).join(", ")
    };
    let (a, b) = (of(old), of(new));
    (a != b).then_some((a, b))
}

/// The first host option of `provider` whose origin (scheme, host, port)
/// differs between `old` and `new` options: its key and both origins.
pub fn host_change(
    provider: &str,
    old: &Value,
    new: &Value,
) -> Result<Option<(&'static str, String, String)>> {
    let provider = find(provider)?;
    let origin = |opts: &Value, key: &str, default: &str| {
        let v = opts.get(key).and_then(Value::as_str).unwrap_or(default);
        url::Url::parse(v)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| v.to_owned())
    };
    Ok(provider.hosts.iter().find_map(|(key, default)| {
        let (a, b) = (origin(old, key, default), origin(new, key, default));
        (a != b).then_some((*key, a, b))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;
    use std::time::Duration;

    fn parse(o: Value, c: Value) -> Result<Configured> {
        configure("hubspot", &o, &c, false)
    }

    #[test]
    fn defaults() {
        let c = parse(json!({}), json!({"access_token": "pat-1"})).unwrap();
        assert_eq!(c.provider.name, "hubspot");
        let c = c.config;
        assert_eq!(c.option_str("base_url"), None);
        assert_eq!(c.lookback, Duration::from_secs(3_600));
        assert!(c.track_deletes);
        assert_eq!(c.option_bool("associations"), None);
        assert_eq!(c.secrets(), ["pat-1"]);
    }

    #[test]
    fn hubspot_associations_option_is_a_boolean() {
        let c = parse(json!({"associations": false}), json!({"access_token": "t"})).unwrap();
        assert_eq!(c.config.option_bool("associations"), Some(false));
        let e = parse(json!({"associations": "no"}), json!({"access_token": "t"})).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
        assert!(e
            .message
            .contains("options.associations must be true or false"));
        // Salesforce has no such option.
        let e = configure(
            "salesforce",
            &json!({"associations": true}),
            &json!({}),
            false,
        )
        .unwrap_err();
        assert!(
            e.message.contains("unknown option \"associations\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_host_change_is_a_change_of_origin() {
        let old = json!({"base_url": "https://api.hubapi.com"});
        assert_eq!(host_change("hubspot", &old, &json!({})).unwrap(), None);
        assert_eq!(
            host_change(
                "hubspot",
                &old,
                &json!({"base_url": "https://api.hubapi.com/"})
            )
            .unwrap(),
            None
        );
        let (key, a, b) = host_change(
            "hubspot",
            &old,
            &json!({"base_url": "https://evil.example"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (key, a.as_str(), b.as_str()),
            ("base_url", "https://api.hubapi.com", "https://evil.example")
        );
        // http vs https, or another port, is another origin.
        assert!(host_change(
            "hubspot",
            &old,
            &json!({"base_url": "http://api.hubapi.com"})
        )
        .unwrap()
        .is_some());
        assert!(host_change(
            "salesforce",
            &json!({}),
            &json!({"login_url": "https://login.salesforce.com:8443"})
        )
        .unwrap()
        .is_some());
        assert_eq!(
            host_change("salesforce", &json!({}), &json!({"api_version": "60.0"})).unwrap(),
            None
        );
    }

    #[test]
    fn bad_input_is_named_without_the_secret() {
        let e = configure("hubspt", &json!({}), &json!({}), false).unwrap_err();
        assert!(e.message.contains("unknown provider \"hubspt\""));
        let e = parse(json!({}), json!({})).unwrap_err();
        assert!(e.message.contains("needs credentials.access_token"));
        let e = parse(json!({"base_ur": "x"}), json!({"access_token": "t"})).unwrap_err();
        assert!(
            e.message.contains("unknown option \"base_ur\""),
            "{}",
            e.message
        );
        assert!(e.hint.unwrap().contains("base_url"));
        let e = parse(
            json!({}),
            json!({"access_token": "t", "secret_thing": "hunter2"}),
        )
        .unwrap_err();
        assert!(!format!("{e:?}").contains("hunter2"));
        let e = parse(
            json!({"base_url": "http://example.com"}),
            json!({"access_token": "t"}),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
        let e = parse(json!({"max_retries": -1}), json!({"access_token": "t"})).unwrap_err();
        assert!(e.message.contains("max_retries"));
        assert!(parse(
            json!({"base_url": "http://127.0.0.1:9"}),
            json!({"access_token": "t"})
        )
        .is_ok());
    }
}
