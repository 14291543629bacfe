//! Microsoft Dynamics 365 through the Dataverse Web API (OData v4): any
//! table, its columns discovered from `EntityDefinitions`, incremental
//! runs through change tracking (delta links) where the table has it and
//! windows of `modifiedon` where it does not, tokens from Microsoft Entra
//! ID (client credentials). Native code rather than a `rest` spec: a delta
//! link is a watermark no time window can express, its deleted rows come
//! as `$deletedEntity` entries, an expired token must turn into a full
//! read, and columns need the metadata API's types. See README.md beside
//! this file for the API facts this connector relies on.

mod api;
mod reader;

use serde_json::Value;

pub use api::{DEFAULT_API_VERSION, DEFAULT_LOGIN_URL, MAX_PAGE_SIZE};

use crate::config::{boolean, check_url_option, int, require_credential, SourceConfig};
use crate::error::{CrmError, Result};
use crate::http::HttpClient;
use crate::source::{
    BoxFuture, CheckArgs, Connector, DefaultFields, Field, IdSource, ObjectInfo, PageSource,
    Provider, ReadRequest, Record, StreamDefaults,
};
use api::{check_logical, ClientAuth, Dataverse};
use reader::Reader;

/// Dynamics 365 / Dataverse as the rest of the system sees it.
pub const PROVIDER: Provider = Provider {
    name: "dynamics",
    options: &[
        "environment_url",
        "login_url",
        "api_version",
        "page_size",
        "change_tracking",
    ],
    credentials: &[
        "tenant_id",
        "client_id",
        "client_secret",
        "certificate",
        "private_key",
    ],
    // Tokens are asked of login_url; the API is environment_url.
    hosts: &[("environment_url", ""), ("login_url", DEFAULT_LOGIN_URL)],
    streams: STREAMS,
    other_objects: DefaultFields::All,
    // Ids are listed by a query of the primary key.
    reconciles: true,
    refuses: |object| check_logical(object).err().map(|e| e.message),
    check,
    connect,
};

pub const STREAMS: &[StreamDefaults] = &[
    StreamDefaults {
        name: "contact",
        object: "contact",
        fields: DefaultFields::All,
    },
    StreamDefaults {
        name: "account",
        object: "account",
        fields: DefaultFields::All,
    },
    StreamDefaults {
        name: "lead",
        object: "lead",
        fields: DefaultFields::All,
    },
    StreamDefaults {
        name: "opportunity",
        object: "opportunity",
        fields: DefaultFields::All,
    },
    StreamDefaults {
        name: "systemuser",
        object: "systemuser",
        fields: DefaultFields::All,
    },
];

fn check(a: &CheckArgs<'_>) -> Result<()> {
    let env = match a.options.get("environment_url") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        _ => {
            return Err(CrmError::config("provider dynamics needs options.environment_url")
                .with_hint("The environment's URL, such as https://contoso.crm.dynamics.com (Power Platform admin center > Environments)."))
        }
    };
    check_url_option(
        a.options,
        "environment_url",
        "https://contoso.crm.dynamics.com",
        a.allow_insecure_http,
    )?;
    let u = url::Url::parse(env).map_err(|e| CrmError::config(e.to_string()))?;
    if u.path() != "/" || u.query().is_some() {
        return Err(CrmError::config(
            "options.environment_url must be the environment's root, without a path",
        )
        .with_hint(
            "Such as https://contoso.crm.dynamics.com; the connector adds /api/data/v9.2/.",
        ));
    }
    check_url_option(
        a.options,
        "login_url",
        DEFAULT_LOGIN_URL,
        a.allow_insecure_http,
    )?;
    match a.options.get("api_version") {
        None => {}
        Some(Value::String(v))
            if !v.is_empty()
                && v.split('.').count() == 2
                && v.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) => {}
        Some(_) => {
            return Err(
                CrmError::config("options.api_version must look like \"9.2\"")
                    .with_hint("The Web API version, 9.2 by default."),
            )
        }
    }
    int(a.options, "page_size", 1, MAX_PAGE_SIZE)?;
    boolean(a.options, "change_tracking")?;
    const HINT: &str = "Pass the app registration's directory (tenant) id, application (client) id and a client secret's value, or its certificate and private key (PEM): credentials => '{\"tenant_id\": \"...\", \"client_id\": \"...\", \"client_secret\": \"...\"}'.";
    let tenant = require_credential(a.credentials, "dynamics", "tenant_id", HINT)?;
    // A GUID or a verified domain: it goes in the token URL's path.
    if tenant.len() > 100
        || !tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(CrmError::config(
            "credentials.tenant_id must be the directory (tenant) id, a GUID or a domain name",
        ));
    }
    require_credential(a.credentials, "dynamics", "client_id", HINT)?;
    client_auth(a.credentials).map(|_| ())
}

/// A client secret, or a certificate and its private key (one of them).
fn client_auth(creds: &serde_json::Map<String, Value>) -> Result<ClientAuth> {
    let text = |k: &str| {
        creds
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    match (text("client_secret"), text("certificate"), text("private_key")) {
        (Some(s), None, None) => Ok(ClientAuth::Secret(s.to_owned())),
        (None, Some(cert), Some(pem)) => {
            let der = crate::jwt::certificate_der(cert)?;
            let key = crate::jwt::parse_key(pem, "Pass the private key of the certificate uploaded to the app registration, as PEM text beginning with -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----.")?;
            Ok(ClientAuth::Certificate {
                thumbprint: crate::jwt::thumbprint_s256(&der),
                key: Box::new(key),
                pem: pem.to_owned(),
            })
        }
        _ => Err(CrmError::config(
            "provider dynamics needs credentials.client_secret, or credentials.certificate and credentials.private_key",
        )
        .with_hint("Pass a client secret's value, or the certificate uploaded to the app registration and its private key (PEM), not both.")),
    }
}

fn connect<'a>(http: &'a HttpClient, cfg: &'a SourceConfig) -> Result<Box<dyn Connector + 'a>> {
    let env = cfg
        .option_str("environment_url")
        .ok_or_else(|| CrmError::config("provider dynamics needs options.environment_url"))?;
    let cred = |k: &str| cfg.credential(k).unwrap_or_default();
    let mut api = Dataverse::new(
        http,
        env,
        cfg.option_str("login_url").unwrap_or(DEFAULT_LOGIN_URL),
        cfg.option_str("api_version").unwrap_or(DEFAULT_API_VERSION),
        cred("tenant_id"),
        cred("client_id"),
        client_auth(&cfg.credentials)?,
    )?;
    api.page_size = cfg.option_u64("page_size");
    api.change_tracking = cfg.option_bool("change_tracking").unwrap_or(true);
    // Dataverse limits each user (the app's application user) per
    // environment: every process calling it with this app spends one budget.
    {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        (api.api.origin().ascii_serialization(), cred("client_id")).hash(&mut h);
        http.share_budget(h.finish().max(1));
        http.learn_budget(api::REQUESTS_PER_MINUTE, 60_000);
    }
    Ok(Box::new(api))
}

impl Connector for Dataverse<'_> {
    fn objects(&self) -> BoxFuture<'_, Result<Vec<ObjectInfo>>> {
        Box::pin(self.tables())
    }

    fn fields<'a>(&'a self, object: &'a str) -> BoxFuture<'a, Result<Vec<Field>>> {
        Box::pin(self.columns(object))
    }

    fn reader<'a>(&'a self, req: ReadRequest) -> BoxFuture<'a, Result<Box<dyn PageSource + 'a>>> {
        Box::pin(async move {
            let table = self.table(&req.object).await?;
            let columns: Vec<String> = req.fields.iter().map(|f| f.name.clone()).collect();
            let r = Reader::new(
                self,
                table,
                &columns,
                &req.mode,
                req.lookback,
                req.resume.as_deref(),
            )?;
            Ok(Box::new(r) as Box<dyn PageSource + 'a>)
        })
    }

    fn ids<'a>(
        &'a self,
        object: &'a str,
        _fields: &'a [Field],
    ) -> BoxFuture<'a, Result<Box<dyn IdSource + 'a>>> {
        Box::pin(async move {
            let table = self.table(object).await?;
            let first = self.list_url(&table.set, &table.key, &[])?;
            // The first page's link counts too: a next link back to it loops.
            let mut cursors = crate::paging::Cursors::default();
            cursors.follow("Dataverse's @odata.nextLink", first.as_str())?;
            Ok(Box::new(Ids {
                api: self,
                table,
                next: Some(first),
                cursors,
            }) as Box<dyn IdSource + 'a>)
        })
    }

    fn read_ids<'a>(
        &'a self,
        object: &'a str,
        fields: &'a [Field],
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Record>>> {
        Box::pin(async move {
            let table = self.table(object).await?;
            let columns: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
            let mut out = Vec::new();
            for chunk in ids.chunks(100) {
                // Ids go into an OData literal: GUIDs only.
                let guids: Vec<String> = chunk
                    .iter()
                    .filter(|id| is_guid(id))
                    .map(|id| format!("'{id}'"))
                    .collect();
                if guids.is_empty() {
                    continue;
                }
                let filter = format!(
                    "Microsoft.Dynamics.CRM.In(PropertyName='{}',PropertyValues=[{}])",
                    table.key,
                    guids.join(",")
                );
                let mut r = Reader::by_filter(self, table.clone(), &columns, &filter)?;
                while let Some(p) = r.next_page().await? {
                    out.extend(p.records);
                }
            }
            Ok(out)
        })
    }
}

/// When a Dataverse watermark was taken: a delta token's time
/// (`{version}!{MM/dd/yyyy HH:mm:ss}`, UTC) or a window's start.
pub fn watermark_time(w: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Some(t) = w.strip_prefix("modified:") {
        return crate::types::parse_datetime(t);
    }
    let token = w.strip_prefix("delta:")?;
    let (_, when) = token.split_once('!')?;
    chrono::NaiveDateTime::parse_from_str(when, "%m/%d/%Y %H:%M:%S")
        .ok()
        .map(|d| d.and_utc())
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// The ids of a table's rows, a page of the primary key at a time.
struct Ids<'a> {
    api: &'a Dataverse<'a>,
    table: api::Table,
    next: Option<url::Url>,
    /// Next links followed (an API handing one back would loop).
    cursors: crate::paging::Cursors,
}

impl IdSource for Ids<'_> {
    fn next_ids(&mut self) -> BoxFuture<'_, Result<Option<Vec<String>>>> {
        Box::pin(async move {
            let Some(url) = self.next.take() else {
                return Ok(None);
            };
            let prefer = format!("odata.maxpagesize={}", self.api.page_for(1));
            let what = format!("table {}", self.table.logical);
            let r = self.api.get(&what, &url, &prefer, &|_| false).await?;
            let page = self.api.page(&url, &r.body)?;
            let mut ids = Vec::with_capacity(page.value.len());
            for raw in &page.value {
                #[derive(serde::Deserialize)]
                struct Row {
                    #[serde(flatten)]
                    rest: serde_json::Map<String, Value>,
                }
                let row: Row = serde_json::from_str(raw.get()).map_err(|e| {
                    CrmError::bad_response(format!("a row of {what} is not a JSON object ({e})"))
                })?;
                let id = row
                    .rest
                    .get(&self.table.key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        CrmError::bad_response(format!("a row of {what} has no {}", self.table.key))
                    })?;
                ids.push(id.to_owned());
            }
            if let Some(n) = page.next {
                self.cursors.follow("Dataverse's @odata.nextLink", &n)?;
                self.next =
                    Some(url::Url::parse(&n).map_err(|e| CrmError::bad_response(e.to_string()))?);
            }
            Ok(Some(ids))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::configure;
    use serde_json::json;

    fn creds() -> Value {
        json!({"tenant_id": "7a1b2c3d-0000-4000-8000-00000000d365", "client_id": "c", "client_secret": "s"})
    }

    #[test]
    fn options_and_credentials_are_checked() {
        let ok = configure(
            "dynamics",
            &json!({"environment_url": "https://contoso.crm.dynamics.com"}),
            &creds(),
            false,
        );
        assert!(ok.is_ok(), "{ok:?}");
        let e = configure("dynamics", &json!({}), &creds(), false).unwrap_err();
        assert!(e.message.contains("needs options.environment_url"));
        let e = configure(
            "dynamics",
            &json!({"environment_url": "http://contoso.crm.dynamics.com"}),
            &creds(),
            false,
        )
        .unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidConfig);
        let e = configure(
            "dynamics",
            &json!({"environment_url": "https://contoso.crm.dynamics.com/api/data/v9.2"}),
            &creds(),
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("without a path"), "{}", e.message);
        let e = configure(
            "dynamics",
            &json!({"environment_url": "https://c.crm.dynamics.com", "page_size": 5001}),
            &creds(),
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("page_size"), "{}", e.message);
        let e = configure(
            "dynamics",
            &json!({"environment_url": "https://c.crm.dynamics.com"}),
            &json!({"tenant_id": "x/../y", "client_id": "c", "client_secret": "hunter2"}),
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("tenant_id"), "{}", e.message);
        assert!(!format!("{e:?}").contains("hunter2"));
        let e = configure(
            "dynamics",
            &json!({"environment_url": "https://c.crm.dynamics.com"}),
            &json!({"tenant_id": "t", "client_id": "c"}),
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("client_secret"), "{}", e.message);
    }

    #[test]
    fn watermarks_tell_their_time() {
        let t = watermark_time("delta:919042!08/22/2017 08:10:44").unwrap();
        assert_eq!(t.to_rfc3339(), "2017-08-22T08:10:44+00:00");
        let t = watermark_time("modified:2026-12-05T10:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-05T10:00:00+00:00");
        assert!(watermark_time("delta:garbage").is_none());
        assert!(watermark_time("2026-12-05T10:00:00Z").is_none());
    }

    #[test]
    fn only_guids_go_into_an_in_filter() {
        assert!(is_guid("60c4e274-0d87-e711-80e5-00155db19e6d"));
        assert!(!is_guid("60c4e274-0d87-e711-80e5-00155db19e6'"));
        assert!(!is_guid("x"));
    }
}
