//! Zoho CRM (REST API v8): any module, fields from the fields metadata
//! API, tokens from the data centre's Zoho Accounts server with calls to
//! the `api_domain` it names, API credits watched. Native code rather than
//! a `rest` spec: a call takes 50 fields at most, so wider modules are read
//! in groups joined by id; `page` stops at 2,000 records and page tokens
//! at 100,000, past which COQL goes on by id; token errors come as HTTP
//! 200. See README.md beside this file for the API facts it relies on.

mod api;
mod reader;

use serde_json::Value;

pub use api::{DEFAULT_ACCOUNTS_URL, DEFAULT_MAX_DAILY_SHARE, MAX_FIELDS};

use crate::config::{check_url_option, int, require_credential, SourceConfig};
use crate::error::{CrmError, Result};
use crate::http::HttpClient;
use crate::source::{
    BoxFuture, CheckArgs, Connector, DefaultFields, Field, IdSource, ObjectInfo, PageSource,
    Provider, ReadRequest, Record, StreamDefaults,
};
use crate::types::PgType;
use api::{check_module, Zoho, COQL_LIMIT};
use reader::{groups, Fetch, Reader, Users};

/// Zoho CRM as the rest of the system sees it.
pub const PROVIDER: Provider = Provider {
    name: "zoho",
    options: &[
        "accounts_url",
        "api_domain",
        "daily_credits",
        "max_daily_share",
    ],
    credentials: &["client_id", "client_secret", "refresh_token"],
    // Tokens come from accounts_url; API calls go to the api_domain its
    // answer names (checked against the data centre) or the option's.
    hosts: &[("accounts_url", DEFAULT_ACCOUNTS_URL), ("api_domain", "")],
    streams: STREAMS,
    other_objects: DefaultFields::All,
    reconciles: true,
    refuses: |module| check_module(module).err().map(|e| e.message),
    check,
    connect,
};

pub const STREAMS: &[StreamDefaults] = &[
    StreamDefaults {
        name: "contacts",
        object: "Contacts",
        fields: DefaultFields::All,
    },
    StreamDefaults {
        name: "accounts",
        object: "Accounts",
        fields: DefaultFields::All,
    },
    StreamDefaults {
        name: "leads",
        object: "Leads",
        fields: DefaultFields::All,
    },
    StreamDefaults {
        name: "deals",
        object: "Deals",
        fields: DefaultFields::All,
    },
    StreamDefaults {
        name: "users",
        object: "Users",
        fields: DefaultFields::All,
    },
];

const HINT: &str = "Pass a self client's client_id and client_secret and a refresh token made with the scopes ZohoCRM.modules.READ, ZohoCRM.settings.READ, ZohoCRM.users.READ and ZohoCRM.coql.READ.";

fn check(a: &CheckArgs<'_>) -> Result<()> {
    check_url_option(
        a.options,
        "accounts_url",
        DEFAULT_ACCOUNTS_URL,
        a.allow_insecure_http,
    )?;
    check_url_option(
        a.options,
        "api_domain",
        "https://www.zohoapis.com",
        a.allow_insecure_http,
    )?;
    int(a.options, "daily_credits", 1, 100_000_000)?;
    int(a.options, "max_daily_share", 1, 100)?;
    for k in ["client_id", "client_secret", "refresh_token"] {
        require_credential(a.credentials, "zoho", k, HINT)?;
    }
    if let Some(Value::String(u)) = a.options.get("accounts_url") {
        let url = url::Url::parse(u).map_err(|e| CrmError::config(e.to_string()))?;
        if url.path() != "/" {
            return Err(CrmError::config(
                "options.accounts_url must be the accounts server's root, without a path",
            )
            .with_hint("Such as https://accounts.zoho.eu for the EU data centre."));
        }
    }
    Ok(())
}

fn connect<'a>(http: &'a HttpClient, cfg: &'a SourceConfig) -> Result<Box<dyn Connector + 'a>> {
    let cred = |k: &str| cfg.credential(k).unwrap_or_default();
    let mut api = Zoho::new(
        http,
        cfg.option_str("accounts_url")
            .unwrap_or(DEFAULT_ACCOUNTS_URL),
        cfg.option_str("api_domain"),
        cred("client_id"),
        cred("client_secret"),
        cred("refresh_token"),
    )?;
    api.daily_credits = cfg.option_u64("daily_credits");
    api.max_daily_share = cfg
        .option_u64("max_daily_share")
        .unwrap_or(DEFAULT_MAX_DAILY_SHARE);
    Ok(Box::new(api))
}

/// The users API's fields (it has no fields metadata).
fn user_fields() -> Vec<Field> {
    let f = |name: &str, label: &str, pg_type: PgType| Field {
        name: name.to_owned(),
        label: label.to_owned(),
        crm_type: "user".to_owned(),
        pg_type,
        custom: false,
        column: None,
    };
    vec![
        f("full_name", "Full Name", PgType::Text),
        f("first_name", "First Name", PgType::Text),
        f("last_name", "Last Name", PgType::Text),
        f("email", "Email", PgType::Text),
        f("status", "Status", PgType::Text),
        f("role", "Role", PgType::Jsonb),
        f("created_time", "Created Time", PgType::TimestampTz),
        f("Modified_Time", "Modified Time", PgType::TimestampTz),
    ]
}

impl Connector for Zoho<'_> {
    fn objects(&self) -> BoxFuture<'_, Result<Vec<ObjectInfo>>> {
        Box::pin(async move {
            let mut v = self.modules().await?;
            if !v.iter().any(|o| o.name == "Users") {
                v.push(ObjectInfo {
                    name: "Users".into(),
                    label: "Users".into(),
                    custom: false,
                    unsyncable: None,
                });
            }
            Ok(v)
        })
    }

    fn fields<'a>(&'a self, object: &'a str) -> BoxFuture<'a, Result<Vec<Field>>> {
        Box::pin(async move {
            if object == "Users" {
                return Ok(user_fields());
            }
            api::Zoho::fields(self, object).await
        })
    }

    fn reader<'a>(&'a self, req: ReadRequest) -> BoxFuture<'a, Result<Box<dyn PageSource + 'a>>> {
        Box::pin(async move {
            check_module(&req.object)?;
            if req.object == "Users" {
                return Ok(Box::new(Users {
                    api: self,
                    page: Some(1),
                }) as Box<dyn PageSource + 'a>);
            }
            Ok(Box::new(Reader::new(self, &req)) as Box<dyn PageSource + 'a>)
        })
    }

    /// COQL of the id alone, 2,000 a call by id (3 credits).
    fn ids<'a>(
        &'a self,
        object: &'a str,
        _fields: &'a [Field],
    ) -> BoxFuture<'a, Result<Box<dyn IdSource + 'a>>> {
        Box::pin(async move {
            check_module(object)?;
            if object == "Users" {
                return Err(CrmError::unsupported(
                    "Zoho CRM users are read whole each run: nothing to reconcile",
                ));
            }
            Ok(Box::new(Ids {
                api: self,
                module: object,
                after: Some("0".to_owned()),
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
            check_module(object)?;
            let names: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
            // Ids go into a query string: digits only.
            let ids: Vec<String> = ids
                .iter()
                .filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
                .cloned()
                .collect();
            Fetch {
                api: self,
                module: object.to_owned(),
                groups: groups(&names),
            }
            .by_ids(&ids)
            .await
        })
    }
}

struct Ids<'a> {
    api: &'a Zoho<'a>,
    module: &'a str,
    after: Option<String>,
}

impl IdSource for Ids<'_> {
    fn next_ids(&mut self) -> BoxFuture<'_, Result<Option<Vec<String>>>> {
        Box::pin(async move {
            let Some(after) = self.after.take() else {
                return Ok(None);
            };
            let q = format!(
                "select id from {} where id > '{after}' order by id asc limit {COQL_LIMIT}",
                self.module
            );
            let body = self.api.coql(self.module, &q).await?;
            let p = api::page("POST /crm/v8/coql", &body)?;
            let mut ids = Vec::with_capacity(p.data.len());
            for raw in &p.data {
                #[derive(serde::Deserialize)]
                struct Row {
                    id: String,
                }
                let r: Row = serde_json::from_str(raw.get()).map_err(|e| {
                    CrmError::bad_response(format!(
                        "an id of {} has an unexpected shape ({e})",
                        self.module
                    ))
                })?;
                if !r.id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CrmError::bad_response(format!(
                        "an id of {} is not a number",
                        self.module
                    )));
                }
                ids.push(r.id);
            }
            if p.info.more_records {
                self.after = ids.last().cloned();
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
        json!({"client_id": "1000.X", "client_secret": "s", "refresh_token": "1000.r"})
    }

    #[test]
    fn options_and_credentials_are_checked() {
        assert!(configure("zoho", &json!({}), &creds(), false).is_ok());
        assert!(configure(
            "zoho",
            &json!({"accounts_url": "https://accounts.zoho.eu"}),
            &creds(),
            false
        )
        .is_ok());
        let e = configure(
            "zoho",
            &json!({"accounts_url": "https://accounts.zoho.eu/oauth/v2/token"}),
            &creds(),
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("without a path"), "{}", e.message);
        let e = configure("zoho", &json!({"max_daily_share": 0}), &creds(), false).unwrap_err();
        assert!(e.message.contains("max_daily_share"), "{}", e.message);
        let e = configure(
            "zoho",
            &json!({}),
            &json!({"client_id": "1000.X", "client_secret": "hunter2"}),
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("refresh_token"), "{}", e.message);
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
