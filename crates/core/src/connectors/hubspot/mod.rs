//! HubSpot CRM v3: contacts, companies and deals. See README.md beside this
//! file for the API facts this connector relies on.

mod api;
mod auth;
mod reader;

pub use api::{ASSOC_BATCH_LIMIT, HUBSPOT_SEARCH_MAX_RESULTS, LIST_PAGE_LIMIT, SEARCH_PAGE_LIMIT};

use crate::config::{boolean, check_url_option, SourceConfig};
use crate::error::Result;
use crate::http::HttpClient;
use crate::source::{
    BoxFuture, CheckArgs, Connector, DefaultFields, Field, IdSource, ObjectInfo, PageSource,
    Provider, ReadRequest, Record, StreamDefaults,
};
use api::{add_associations, check_object, HubSpot, DEFAULT_BASE_URL};
use reader::HubSpotReader;

/// HubSpot as the rest of the system sees it.
pub const PROVIDER: Provider = Provider {
    name: "hubspot",
    options: &["base_url", "associations", "api_version", "max_daily_share"],
    credentials: &[
        "access_token",
        "client_id",
        "client_secret",
        "refresh_token",
    ],
    hosts: &[("base_url", DEFAULT_BASE_URL)],
    streams: STREAMS,
    // Objects may have hundreds of properties, all sent in the list URL:
    // only the id and modification time unless the user picks properties.
    other_objects: DefaultFields::Only(&[]),
    reconciles: true,
    refuses: |_| None,
    check,
    connect,
};

fn check(a: &CheckArgs<'_>) -> Result<()> {
    auth::Auth::from_credentials(a.credentials)?;
    crate::config::int(a.options, "max_daily_share", 1, 100)?;
    match a.options.get("api_version") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(v)) => api::check_api_version(v)?,
        Some(v) => {
            return Err(crate::CrmError::config(format!(
                "option api_version must be a string such as \"v3\" or \"2026-03\", not {v}"
            )))
        }
    }
    boolean(a.options, "associations")?;
    check_url_option(
        a.options,
        "base_url",
        DEFAULT_BASE_URL,
        a.allow_insecure_http,
    )
}

fn connect<'a>(http: &'a HttpClient, cfg: &'a SourceConfig) -> Result<Box<dyn Connector + 'a>> {
    let base = cfg.option_str("base_url").unwrap_or(DEFAULT_BASE_URL);
    let auth = auth::Auth::from_credentials(&cfg.credentials)?;
    // Every process calling this account with these credentials spends one
    // budget (HubSpot counts calls per app and account).
    http.share_budget(auth.budget_key(base));
    let version = cfg.option_str("api_version").unwrap_or("v3");
    let api = HubSpot::new(http, base, auth)?
        .with_api_version(version)
        .with_max_daily_share(cfg.option_u64("max_daily_share").unwrap_or(100))
        .with_associations(cfg.option_bool("associations").unwrap_or(true));
    Ok(Box::new(api))
}

/// The objects this connector syncs. HubSpot's custom objects (schemas API)
/// are not supported yet.
const OBJECTS: &[(&str, &str)] = &[
    ("contacts", "Contacts"),
    ("companies", "Companies"),
    ("deals", "Deals"),
];

impl Connector for HubSpot<'_> {
    fn objects(&self) -> BoxFuture<'_, Result<Vec<ObjectInfo>>> {
        let objects = OBJECTS
            .iter()
            .map(|(name, label)| ObjectInfo {
                unsyncable: None,
                name: (*name).to_owned(),
                label: (*label).to_owned(),
                custom: false,
            })
            .collect();
        Box::pin(async move { Ok(objects) })
    }

    fn fields<'a>(&'a self, object: &'a str) -> BoxFuture<'a, Result<Vec<Field>>> {
        Box::pin(self.properties(object))
    }

    fn reader<'a>(&'a self, req: ReadRequest) -> BoxFuture<'a, Result<Box<dyn PageSource + 'a>>> {
        Box::pin(async move {
            check_object(&req.object)?;
            let props: Vec<String> = req.fields.iter().map(|f| f.name.clone()).collect();
            let r = HubSpotReader::new(
                self,
                &req.object,
                &props,
                &req.mode,
                req.lookback.as_millis() as i64,
                req.track_deletes,
                req.resume.as_deref(),
            )?;
            Ok(Box::new(r) as Box<dyn PageSource + 'a>)
        })
    }

    /// The list endpoint asking for no property beyond the id, or, when
    /// the stream syncs calculated properties, for those too: each
    /// reconciliation refreshes them at no extra call.
    fn ids<'a>(
        &'a self,
        object: &'a str,
        fields: &'a [Field],
    ) -> BoxFuture<'a, Result<Box<dyn IdSource + 'a>>> {
        Box::pin(async move {
            check_object(object)?;
            let known = self.calculated(object).await?;
            let calculated = fields
                .iter()
                .filter(|f| known.contains(&f.name))
                .map(|f| f.name.clone())
                .collect();
            Ok(Box::new(Ids {
                api: self,
                object,
                after: None,
                done: false,
                cursors: Default::default(),
                calculated,
                last: Vec::new(),
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
            check_object(object)?;
            // The properties a reader asks for.
            let wanted: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
            let (props, _) = api::read_properties(object, &wanted);
            let mut records = self.batch_read(object, &props, ids).await?;
            add_associations(self, object, self.associations_for(object), &mut records).await?;
            Ok(records)
        })
    }
}

/// The ids of an object's live records, a list page at a time.
struct Ids<'a> {
    api: &'a HubSpot<'a>,
    object: &'a str,
    after: Option<String>,
    done: bool,
    cursors: crate::paging::Cursors,
    /// The stream's calculated properties, read along with the ids (they
    /// change without the modification time moving).
    calculated: Vec<String>,
    last: Vec<Record>,
}

impl IdSource for Ids<'_> {
    fn next_ids(&mut self) -> BoxFuture<'_, Result<Option<Vec<String>>>> {
        Box::pin(async move {
            if self.done {
                return Ok(None);
            }
            let (ids, next) = if self.calculated.is_empty() {
                self.api.id_page(self.object, self.after.as_deref()).await?
            } else {
                let props = format!("hs_object_id,{}", self.calculated.join(","));
                let (records, next, _) = self
                    .api
                    .list_page(self.object, &props, &[], self.after.as_deref(), false)
                    .await?;
                let ids = records.iter().map(|r| r.id.clone()).collect();
                self.last = records;
                (ids, next)
            };
            // A cursor that comes back would list forever.
            if let Some(n) = &next {
                self.cursors.follow("HubSpot's paging.next.after", n)?;
            }
            self.done = next.is_none();
            self.after = next;
            Ok(Some(ids))
        })
    }

    fn refreshed(&mut self) -> (Vec<String>, Vec<Record>) {
        (self.calculated.clone(), std::mem::take(&mut self.last))
    }

    fn raw_prefix(&self) -> &'static str {
        "properties"
    }
}

pub const STREAMS: &[StreamDefaults] = &[
    StreamDefaults {
        name: "contacts",
        object: "contacts",
        fields: DefaultFields::Only(&[
            "email",
            "firstname",
            "lastname",
            "phone",
            "mobilephone",
            "company",
            "jobtitle",
            "website",
            "address",
            "city",
            "state",
            "zip",
            "country",
            "lifecyclestage",
            "hs_lead_status",
            "hubspot_owner_id",
            "createdate",
            "lastmodifieddate",
            "hs_object_id",
        ]),
    },
    StreamDefaults {
        name: "companies",
        object: "companies",
        fields: DefaultFields::Only(&[
            "name",
            "domain",
            "website",
            "phone",
            "industry",
            "city",
            "state",
            "country",
            "numberofemployees",
            "annualrevenue",
            "lifecyclestage",
            "hubspot_owner_id",
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
        ]),
    },
    StreamDefaults {
        name: "deals",
        object: "deals",
        fields: DefaultFields::Only(&[
            "dealname",
            "amount",
            "deal_currency_code",
            "dealstage",
            "pipeline",
            "closedate",
            "hubspot_owner_id",
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
        ]),
    },
];
