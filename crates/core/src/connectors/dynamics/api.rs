//! Calls to the Dataverse Web API and to Microsoft Entra ID for its tokens.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use url::Url;

use crate::error::{CrmError, ErrorKind, Result};
use crate::http::{body_excerpt, parse_json, tokens, HttpClient, Response};
use crate::source::{Field, ObjectInfo};
use crate::types::PgType;

pub const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";
pub const DEFAULT_API_VERSION: &str = "9.2";
/// `Prefer: odata.maxpagesize` takes at most 5,000.
pub const MAX_PAGE_SIZE: u64 = 5_000;
/// The documented service protection limit per user: 6,000 requests in a
/// sliding 300 s, paced here as a fifth of it a minute.
pub const REQUESTS_PER_MINUTE: u32 = 1_200;
/// Labels of option sets, lookups and booleans ride along in `_raw`.
pub const ANNOTATIONS: &str =
    "odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\"";
/// The error code of an expired change-tracking token (ExpiredVersionStamp).
pub const EXPIRED_VERSION_STAMP: &str = "0x80044352";
/// Refresh a token this long before it expires.
const EARLY: Duration = Duration::from_secs(120);
const VENDOR: &str = "Dataverse";

/// What a stream's table is, from `EntityDefinitions`.
#[derive(Debug, Clone, Deserialize)]
pub struct Table {
    #[serde(rename = "LogicalName")]
    pub logical: String,
    #[serde(rename = "EntitySetName")]
    pub set: String,
    #[serde(rename = "PrimaryIdAttribute")]
    pub key: String,
    #[serde(rename = "ChangeTrackingEnabled", default)]
    pub tracking: Option<bool>,
}

/// How the app proves itself to Entra ID: a client secret, or a
/// certificate's private key signing a client assertion.
pub enum ClientAuth {
    Secret(String),
    Certificate {
        /// `x5t#S256`: the certificate's SHA-256 thumbprint.
        thumbprint: String,
        key: Box<rsa::RsaPrivateKey>,
        /// The key's PEM, to tell sources apart in the token cache.
        pem: String,
    },
}

impl ClientAuth {
    /// What the token request carries that must never be shown.
    fn secret(&self) -> &str {
        match self {
            ClientAuth::Secret(s) => s,
            ClientAuth::Certificate { pem, .. } => pem,
        }
    }
}

/// One connection: the environment, its token and page size.
pub struct Dataverse<'a> {
    pub http: &'a HttpClient,
    /// `{environment}/api/data/v{version}/`.
    pub api: Url,
    env: Url,
    token_url: Url,
    client_id: String,
    auth: ClientAuth,
    /// `options.page_size`; None: [`Dataverse::page_for`] picks.
    pub page_size: Option<u64>,
    pub change_tracking: bool,
}

impl<'a> Dataverse<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: &'a HttpClient,
        env: &str,
        login: &str,
        version: &str,
        tenant: &str,
        client_id: &str,
        auth: ClientAuth,
    ) -> Result<Self> {
        let env = Url::parse(env)
            .map_err(|e| CrmError::config(format!("options.environment_url is not a URL: {e}")))?;
        let mut root = env.clone();
        root.set_path("/");
        root.set_query(None);
        let api = root
            .join(&format!("api/data/v{version}/"))
            .map_err(|e| CrmError::config(format!("options.api_version: {e}")))?;
        let token_url = Url::parse(login)
            .and_then(|l| l.join(&format!("/{tenant}/oauth2/v2.0/token")))
            .map_err(|e| CrmError::config(format!("options.login_url: {e}")))?;
        Ok(Dataverse {
            http,
            api,
            env: root,
            token_url,
            client_id: client_id.to_owned(),
            auth,
            page_size: None,
            change_tracking: true,
        })
    }

    /// Rows a page of `columns` columns asks for: the user's page size, or
    /// pages of about 200,000 values (5,000 rows of 40 columns, 500 of a
    /// 400-column table), so that a wide table's page stays a few MB in
    /// memory rather than tens.
    pub fn page_for(&self, columns: usize) -> u64 {
        self.page_size
            .unwrap_or_else(|| (200_000 / columns.max(1) as u64).clamp(100, MAX_PAGE_SIZE))
    }

    /// The scope a token for this environment asks: `{origin}/.default`.
    fn scope(&self) -> String {
        format!("{}/.default", self.env.origin().ascii_serialization())
    }

    fn cache_key(&self) -> u64 {
        let mut h = DefaultHasher::new();
        (
            self.token_url.as_str(),
            &self.client_id,
            self.auth.secret(),
            self.scope(),
        )
            .hash(&mut h);
        h.finish()
    }

    /// A token for the environment: cached in this process until two
    /// minutes before it expires; `stale` (after a 401) asks for a new one.
    async fn token(&self, stale: bool) -> Result<String> {
        let key = self.cache_key();
        if !stale {
            if let Some(c) = tokens::get(key, EARLY) {
                return Ok(c.token);
            }
        }
        let endpoint = format!("POST {}", self.token_url.path());
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope()),
        ];
        match &self.auth {
            ClientAuth::Secret(secret) => form.push(("client_secret", secret.clone())),
            ClientAuth::Certificate {
                thumbprint, key, ..
            } => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ));
                form.push(("client_assertion", self.assertion(thumbprint, key)?));
            }
        }
        let r = self
            .http
            .send(&endpoint, || {
                self.http
                    .request(Method::POST, self.token_url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .form(&form)
            })
            .await?;
        if !r.status.is_success() {
            return Err(token_refused(&r, &endpoint).redact(&[self.auth.secret()]));
        }
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
            #[serde(default)]
            expires_in: Option<Value>,
        }
        // Not through parse_json: its error quotes the body, a token.
        let t: Token = serde_json::from_slice(&r.body).map_err(|_| {
            CrmError::bad_response("Microsoft Entra ID's token answer is not the JSON expected")
                .with_endpoint(&endpoint)
                .with_hint("Check options.login_url: it must be the Entra ID authority, https://login.microsoftonline.com by default.")
        })?;
        let secs = t
            .expires_in
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(3_599)
            .clamp(1, 86_400);
        tokens::put(key, t.access_token.clone(), None, Duration::from_secs(secs));
        Ok(t.access_token)
    }

    /// A client assertion (Entra ID certificate credentials): RS256, the
    /// certificate's `x5t#S256`, for the token endpoint, valid 10 minutes.
    /// <https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials>
    fn assertion(&self, thumbprint: &str, key: &rsa::RsaPrivateKey) -> Result<String> {
        let now = chrono::Utc::now().timestamp();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t#S256": thumbprint});
        let claims = serde_json::json!({
            "aud": self.token_url.as_str(), "iss": self.client_id, "sub": self.client_id,
            "jti": format!("{:016x}{:016x}", now, std::process::id() as u64 ^ (now as u64).rotate_left(17)),
            "nbf": now - 60, "iat": now, "exp": now + 600,
        });
        crate::jwt::sign_rs256(&header, &claims, key)
    }

    /// GET `url` (under the environment's API only) with `prefer`; a 401
    /// gets a new token and one more try. Answers other than 2xx come back
    /// as errors naming the table (`what`), except those `keep` accepts.
    pub async fn get(
        &self,
        what: &str,
        url: &Url,
        prefer: &str,
        keep: &dyn Fn(&Response) -> bool,
    ) -> Result<Response> {
        self.check_link(url)?;
        let endpoint = format!("GET {}", url.path());
        let mut stale = false;
        loop {
            let token = self.token(stale).await?;
            let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                CrmError::bad_response("Entra ID sent a token a header cannot carry")
            })?;
            auth.set_sensitive(true);
            let r = self
                .http
                .send(&endpoint, || {
                    let b = self
                        .http
                        .request(Method::GET, url.clone())
                        .header(AUTHORIZATION, auth.clone())
                        .header(reqwest::header::ACCEPT, "application/json")
                        .header("OData-MaxVersion", "4.0")
                        .header("OData-Version", "4.0");
                    if prefer.is_empty() {
                        b
                    } else {
                        b.header("Prefer", prefer)
                    }
                })
                .await
                // An API or proxy echoing the request must not show the token.
                .map_err(|e| e.redact(&[token.as_str()]))?;
            if r.status == StatusCode::UNAUTHORIZED && !stale {
                stale = true;
                continue;
            }
            if r.status.is_success() || keep(&r) {
                return Ok(r);
            }
            return Err(api_error(&r, &endpoint, what).redact(&[token.as_str()]));
        }
    }

    /// A link the API handed back (next page, delta) goes to the same
    /// environment's API only: it would carry our token.
    pub fn check_link(&self, url: &Url) -> Result<()> {
        if url.origin() != self.api.origin() || !url.path().starts_with(self.api.path()) {
            return Err(CrmError::bad_response(format!(
                "Dataverse handed back a link outside the environment's API ({}); not following it",
                url.origin().ascii_serialization()
            ))
            .with_hint(
                "Check options.environment_url; a proxy in between may be rewriting links.",
            ));
        }
        self.http.check_url(url)
    }

    /// The table `logical` as `EntityDefinitions` describes it.
    pub async fn table(&self, logical: &str) -> Result<Table> {
        check_logical(logical)?;
        let mut url = self
            .api
            .join(&format!("EntityDefinitions(LogicalName='{logical}')"))
            .map_err(|e| CrmError::config(e.to_string()))?;
        url.query_pairs_mut().append_pair(
            "$select",
            "LogicalName,EntitySetName,PrimaryIdAttribute,ChangeTrackingEnabled",
        );
        let r = self.get(logical, &url, "", &|_| false).await?;
        parse_json(VENDOR, &format!("GET {}", url.path()), &r.body)
    }

    /// Every table of the environment.
    pub async fn tables(&self) -> Result<Vec<ObjectInfo>> {
        let mut url = self.api.join("EntityDefinitions").expect("a relative path");
        url.query_pairs_mut().append_pair(
            "$select",
            "LogicalName,EntitySetName,DisplayName,IsCustomEntity,PrimaryIdAttribute",
        );
        let r = self.get("EntityDefinitions", &url, "", &|_| false).await?;
        #[derive(Deserialize)]
        struct Def {
            #[serde(rename = "LogicalName")]
            logical: String,
            #[serde(rename = "DisplayName", default)]
            label: Option<Label>,
            #[serde(rename = "IsCustomEntity", default)]
            custom: bool,
            #[serde(rename = "EntitySetName", default)]
            set: Option<String>,
        }
        #[derive(Deserialize)]
        struct List {
            value: Vec<Def>,
        }
        let l: List = parse_json(VENDOR, "GET EntityDefinitions", &r.body)?;
        Ok(l.value
            .into_iter()
            .map(|d| ObjectInfo {
                label: label_of(&d.label).unwrap_or_else(|| d.logical.clone()),
                unsyncable: d
                    .set
                    .is_none()
                    .then(|| "the table has no entity set: the Web API cannot list it".to_owned()),
                name: d.logical,
                custom: d.custom,
            })
            .collect())
    }

    /// The readable columns of table `logical`, each with its landing type:
    /// lookups under their `_{name}_value` JSON name landing in a column
    /// named after the lookup; date-only columns as dates.
    pub async fn columns(&self, logical: &str) -> Result<Vec<Field>> {
        check_logical(logical)?;
        let base = format!("EntityDefinitions(LogicalName='{logical}')/Attributes");
        let mut url = self
            .api
            .join(&base)
            .map_err(|e| CrmError::config(e.to_string()))?;
        url.query_pairs_mut().append_pair(
            "$select",
            "LogicalName,AttributeType,AttributeTypeName,DisplayName,IsCustomAttribute,IsValidForRead,AttributeOf",
        );
        let r = self.get(logical, &url, "", &|_| false).await?;
        #[derive(Deserialize)]
        struct TypeName {
            #[serde(rename = "Value", default)]
            value: Option<String>,
        }
        #[derive(Deserialize)]
        struct Attr {
            #[serde(rename = "LogicalName")]
            name: String,
            #[serde(rename = "AttributeType", default)]
            ty: Option<String>,
            #[serde(rename = "AttributeTypeName", default)]
            type_name: Option<TypeName>,
            #[serde(rename = "DisplayName", default)]
            label: Option<Label>,
            #[serde(rename = "IsCustomAttribute", default)]
            custom: bool,
            #[serde(rename = "IsValidForRead", default)]
            readable: Option<bool>,
            #[serde(rename = "AttributeOf", default)]
            of: Option<String>,
        }
        #[derive(Deserialize)]
        struct List<T> {
            value: Vec<T>,
        }
        let endpoint = format!("GET {}", url.path());
        let l: List<Attr> = parse_json(VENDOR, &endpoint, &r.body)?;
        // Which DateTime columns hold dates only (Airbyte mapped them as
        // timestamps and failed on "2024-03-15": airbyte PR #77571).
        let mut url = self
            .api
            .join(&format!(
                "{base}/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata"
            ))
            .map_err(|e| CrmError::config(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("$select", "LogicalName,Format");
        let r = self.get(logical, &url, "", &|_| false).await?;
        #[derive(Deserialize)]
        struct Dt {
            #[serde(rename = "LogicalName")]
            name: String,
            #[serde(rename = "Format", default)]
            format: Option<String>,
        }
        let dates: List<Dt> = parse_json(VENDOR, &format!("GET {}", url.path()), &r.body)?;
        let date_only: Vec<String> = dates
            .value
            .into_iter()
            .filter(|d| d.format.as_deref() == Some("DateOnly"))
            .map(|d| d.name)
            .collect();
        Ok(l.value
            .into_iter()
            .filter(|a| a.readable != Some(false) && a.of.is_none())
            .filter_map(|a| {
                let ty = a.ty.clone().unwrap_or_default();
                let type_name = a
                    .type_name
                    .as_ref()
                    .and_then(|t| t.value.clone())
                    .unwrap_or_default();
                let (pg, lookup) = match (ty.as_str(), type_name.as_str()) {
                    (_, "MultiSelectPicklistType") => (PgType::Text, false),
                    ("Lookup" | "Customer" | "Owner", _) => (PgType::Text, true),
                    ("DateTime", _) if date_only.contains(&a.name) => (PgType::Date, false),
                    _ => (pg_type_for(&ty)?, false),
                };
                let label = label_of(&a.label).unwrap_or_else(|| a.name.clone());
                Some(if lookup {
                    Field {
                        name: format!("_{}_value", a.name),
                        label,
                        crm_type: ty,
                        pg_type: pg,
                        custom: a.custom,
                        column: Some(a.name),
                    }
                } else {
                    Field {
                        name: a.name,
                        label,
                        crm_type: if type_name == "MultiSelectPicklistType" {
                            type_name
                        } else {
                            ty
                        },
                        pg_type: pg,
                        custom: a.custom,
                        column: None,
                    }
                })
            })
            .collect())
    }

    /// A listing URL of `set` with `select`, and `extra` query pairs.
    pub fn list_url(&self, set: &str, select: &str, extra: &[(&str, &str)]) -> Result<Url> {
        check_logical(set)?;
        let mut url = self
            .api
            .join(set)
            .map_err(|e| CrmError::config(e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("$select", select);
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// A page of a listing: its rows as received, the next page's link and
    /// the delta link.
    pub fn page(&self, url: &Url, body: &[u8]) -> Result<Page> {
        let endpoint = format!("GET {}", url.path());
        let p: Page = parse_json(VENDOR, &endpoint, body)?;
        for link in [&p.next, &p.delta].into_iter().flatten() {
            let u = Url::parse(link).map_err(|_| {
                CrmError::bad_response("Dataverse sent a next or delta link that is not a URL")
                    .with_endpoint(&endpoint)
            })?;
            self.check_link(&u)?;
        }
        Ok(p)
    }
}

/// One page as the Web API sends it.
#[derive(Debug, Deserialize)]
pub struct Page {
    pub value: Vec<Box<RawValue>>,
    #[serde(rename = "@odata.nextLink", default)]
    pub next: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    pub delta: Option<String>,
}

#[derive(Deserialize)]
struct Label {
    #[serde(rename = "UserLocalizedLabel", default)]
    user: Option<LabelText>,
    #[serde(rename = "LocalizedLabels", default)]
    all: Vec<LabelText>,
}

#[derive(Deserialize)]
struct LabelText {
    #[serde(rename = "Label", default)]
    label: Option<String>,
}

fn label_of(l: &Option<Label>) -> Option<String> {
    let l = l.as_ref()?;
    l.user
        .as_ref()
        .and_then(|u| u.label.clone())
        .or_else(|| l.all.iter().find_map(|x| x.label.clone()))
        .filter(|s| !s.is_empty())
}

/// The landing type of an AttributeType; None for columns the Web API
/// cannot select as values (Virtual: images and files; PartyList,
/// CalendarRules, ManagedProperty are navigation or complex).
pub fn pg_type_for(ty: &str) -> Option<PgType> {
    Some(match ty {
        "String" | "Memo" | "EntityName" | "Uniqueidentifier" | "Lookup" | "Customer" | "Owner" => {
            PgType::Text
        }
        "Integer" | "BigInt" | "Picklist" | "State" | "Status" => PgType::BigInt,
        "Decimal" | "Double" | "Money" => PgType::Numeric,
        "Boolean" => PgType::Boolean,
        "DateTime" => PgType::TimestampTz,
        _ => return None,
    })
}

/// Logical and entity set names are lower-case letters, digits and `_`:
/// anything else would change the path or the OData expression.
pub fn check_logical(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CrmError::config(format!(
            "{name:?} is not a Dataverse table's logical name"
        ))
        .with_hint("Use the table's logical name, lower case, such as contact or new_project (see crm_sync.discover_objects)."))
    }
}

/// The Web API's `{"error":{"code","message"}}`.
pub fn error_code(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct E {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    serde_json::from_slice::<E>(body)
        .map(|e| (e.error.code, e.error.message))
        .unwrap_or_default()
}

fn api_error(r: &Response, endpoint: &str, what: &str) -> CrmError {
    let (code, message) = error_code(&r.body);
    let detail = if message.is_empty() {
        body_excerpt(&r.body)
    } else {
        crate::error::bounded_text(&message, 500)
    };
    let status = r.status.as_u16();
    let (kind, msg, hint) = match r.status {
        StatusCode::UNAUTHORIZED => (
            ErrorKind::Auth,
            format!("Dataverse refused the token for {what} (401)"),
            "Check that the app registration is an application user of the environment (Power Platform admin center > Application users).",
        ),
        StatusCode::FORBIDDEN => (
            ErrorKind::Auth,
            format!("Dataverse refused to read {what} (403)"),
            "Give the application user a security role with organization-level Read on the table.",
        ),
        StatusCode::NOT_FOUND => (
            ErrorKind::ApiRejected,
            format!("Dataverse has no {what} (404)"),
            "Check the table's logical name and options.environment_url.",
        ),
        _ => (
            ErrorKind::ApiRejected,
            format!("Dataverse rejected the request for {what} ({status})"),
            "Check the stream's fields: each must be a readable column of the table.",
        ),
    };
    let e = CrmError::new(kind, msg)
        .with_endpoint(endpoint)
        .with_detail(detail)
        .with_hint(hint);
    if code.is_empty() {
        e
    } else {
        e.with_code(code)
    }
}

fn token_refused(r: &Response, endpoint: &str) -> CrmError {
    #[derive(Deserialize, Default)]
    struct E {
        #[serde(default)]
        error: String,
        #[serde(default)]
        error_codes: Vec<u64>,
    }
    let e: E = serde_json::from_slice(&r.body).unwrap_or_default();
    let aadsts = e
        .error_codes
        .first()
        .map(|c| format!("AADSTS{c}"))
        .unwrap_or_default();
    let hint = match e.error_codes.first() {
        Some(90002) | Some(900023) => "Check credentials.tenant_id: the directory (tenant) id of the app registration.",
        Some(7000215) | Some(7000222) => "Check credentials.client_secret: use the secret's value (not its id), and renew it if it expired.",
        Some(700027) | Some(700024) | Some(700023) => "Check credentials.certificate and private_key: the certificate must be uploaded to the app registration, the key its own, and this machine's clock right.",
        Some(700016) => "Check credentials.client_id: the app registration's application (client) id, in this tenant.",
        Some(500011) | Some(1002012) => "Check options.environment_url: the token is asked for {environment_url}/.default.",
        _ => "Check credentials.tenant_id, client_id and client_secret with crm_sync.alter_source().",
    };
    let kind = if r.status.is_client_error() {
        ErrorKind::Auth
    } else {
        ErrorKind::ServerError
    };
    CrmError::new(
        kind,
        format!(
            "Microsoft Entra ID refused the client credentials ({}{}{})",
            r.status.as_u16(),
            if e.error.is_empty() { "" } else { ", " },
            [e.error.as_str(), aadsts.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        ),
    )
    .with_endpoint(endpoint)
    .with_hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_names_cannot_reach_outside_the_path() {
        assert!(check_logical("contact").is_ok());
        assert!(check_logical("new_project2").is_ok());
        for bad in [
            "",
            "Contact",
            "contact')/x",
            "../x",
            "a b",
            "contacts?$top=1",
        ] {
            assert!(check_logical(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn attribute_types_map_to_landing_types() {
        assert_eq!(pg_type_for("Picklist"), Some(PgType::BigInt));
        assert_eq!(pg_type_for("Money"), Some(PgType::Numeric));
        assert_eq!(pg_type_for("DateTime"), Some(PgType::TimestampTz));
        assert_eq!(pg_type_for("Virtual"), None);
        assert_eq!(pg_type_for("PartyList"), None);
    }

    #[test]
    fn links_go_to_the_environment_api_only() {
        let http = HttpClient::new(Default::default()).unwrap();
        let d = Dataverse::new(
            &http,
            "https://org.crm.dynamics.com",
            DEFAULT_LOGIN_URL,
            "9.2",
            "t",
            "c",
            ClientAuth::Secret("s".into()),
        )
        .unwrap();
        assert_eq!(
            d.api.as_str(),
            "https://org.crm.dynamics.com/api/data/v9.2/"
        );
        assert_eq!(d.scope(), "https://org.crm.dynamics.com/.default");
        assert_eq!(
            d.token_url.as_str(),
            "https://login.microsoftonline.com/t/oauth2/v2.0/token"
        );
        let ok =
            Url::parse("https://org.crm.dynamics.com/api/data/v9.2/contacts?$skiptoken=x").unwrap();
        assert!(d.check_link(&ok).is_ok());
        for bad in [
            "https://evil.example/api/data/v9.2/contacts",
            "http://org.crm.dynamics.com/api/data/v9.2/contacts",
            "https://org.crm.dynamics.com:444/api/data/v9.2/contacts",
            "https://org.crm.dynamics.com/other/contacts",
        ] {
            let e = d.check_link(&Url::parse(bad).unwrap()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadResponse, "{bad}");
        }
    }

    #[test]
    fn wide_tables_get_smaller_pages_unless_the_user_chose() {
        let http = HttpClient::new(Default::default()).unwrap();
        let mut d = Dataverse::new(
            &http,
            "https://o.crm.dynamics.com",
            DEFAULT_LOGIN_URL,
            "9.2",
            "t",
            "c",
            ClientAuth::Secret("s".into()),
        )
        .unwrap();
        assert_eq!(d.page_for(1), 5_000);
        assert_eq!(d.page_for(40), 5_000);
        assert_eq!(d.page_for(400), 500);
        assert_eq!(d.page_for(5_000), 100);
        d.page_size = Some(50);
        assert_eq!(d.page_for(400), 50);
    }

    #[test]
    fn error_bodies_give_code_and_message() {
        let (c, m) = error_code(br#"{"error":{"code":"0x80044352","message":"Version stamp associated with the client has expired. Please perform a full sync."}}"#);
        assert_eq!(c, EXPIRED_VERSION_STAMP);
        assert!(m.starts_with("Version stamp"));
        assert_eq!(error_code(b"<html>"), (String::new(), String::new()));
    }
}
