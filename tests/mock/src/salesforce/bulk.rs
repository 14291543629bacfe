//! Bulk API 2.0 query jobs: create, poll (InProgress for `--bulk-polls`
//! polls, then JobComplete), results as CSV pages with `Sforce-Locator`,
//! abort and delete. The job's records are fixed when it is created; their
//! values too, unless `live_cursors` was on then.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::records::{fmt_dt, fmt_dt_z, make_id, parse_dt};
use super::{not_found, sf_error, soql, visible, Options, State};
use crate::server::{Request, Response};

/// Records per results page when the request names no maxRecords.
pub const DEFAULT_MAX_RECORDS: usize = 50_000;

pub(crate) struct Job {
    id: String,
    operation: String,
    object: String,
    fields: Vec<String>,
    ids: Vec<u64>,
    seq: u64,
    /// Results render current values (see `Options::live_cursors`).
    live: bool,
    state: &'static str,
    polls: u64,
    created_ms: i64,
    version: String,
    delimiter: String,
    line_ending: String,
    error: Option<String>,
}

#[derive(Default)]
pub(crate) struct Jobs(HashMap<String, Job>);

fn delimiter(name: &str) -> Option<&'static str> {
    Some(match name {
        "COMMA" => ",",
        "TAB" => "\t",
        "PIPE" => "|",
        "SEMICOLON" => ";",
        "CARET" => "^",
        "BACKQUOTE" => "`",
        _ => return None,
    })
}

impl Job {
    fn info(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": make_id("005", 1),
            "createdDate": fmt_dt(self.created_ms),
            "systemModstamp": fmt_dt(self.created_ms),
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.version.parse::<f64>().unwrap_or(59.0),
            "lineEnding": self.line_ending,
            "columnDelimiter": self.delimiter,
        });
        if self.state != "UploadComplete" {
            v["jobType"] = json!("V2Query");
            v["numberRecordsProcessed"] = json!(if self.state == "JobComplete" {
                self.ids.len()
            } else {
                0
            });
            v["retries"] = json!(0);
            v["totalProcessingTime"] = json!(if self.state == "JobComplete" { 1234 } else { 0 });
        }
        if let Some(e) = &self.error {
            v["errorMessage"] = json!(e);
        }
        v
    }
}

fn ok(v: Value) -> Response {
    Response::json(200, v.to_string().into_bytes())
}

pub(crate) fn route(
    st: &mut State,
    req: &Request,
    v: &str,
    rest: &[&str],
    opts: &Options,
    new_id: impl FnOnce() -> String,
) -> Response {
    match (req.method.as_str(), rest) {
        ("POST", []) => create(st, req, v, new_id()).unwrap_or_else(|e| e),
        ("GET", [id]) => {
            let Some(job) = st.jobs.0.get_mut(*id) else {
                return not_found();
            };
            if job.state == "UploadComplete" || job.state == "InProgress" {
                job.polls += 1;
                job.state = if job.polls > opts.bulk_polls {
                    "JobComplete"
                } else {
                    "InProgress"
                };
            }
            ok(job.info())
        }
        ("GET", [id, "results"]) => results(st, req, id),
        ("DELETE", [id]) => match st.jobs.0.remove(*id) {
            Some(_) => Response {
                status: 204,
                headers: Vec::new(),
                body: Vec::new(),
            },
            None => not_found(),
        },
        ("PATCH", [id]) => {
            let Some(job) = st.jobs.0.get_mut(*id) else {
                return not_found();
            };
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            if body["state"] != "Aborted" {
                return sf_error(
                    400,
                    "INVALIDJOBSTATE",
                    "A query job can only be changed to Aborted",
                );
            }
            if matches!(job.state, "JobComplete" | "Failed" | "Aborted") {
                return sf_error(
                    400,
                    "INVALIDJOBSTATE",
                    &format!("Cannot abort a job in state {}", job.state),
                );
            }
            job.state = "Aborted";
            ok(job.info())
        }
        _ => not_found(),
    }
}

/// A job request Salesforce refuses.
fn invalid_job(message: &str) -> Response {
    sf_error(400, "INVALIDJOB", message)
}

fn create(st: &mut State, req: &Request, v: &str, id: String) -> Result<Response, Response> {
    let body: Value = serde_json::from_slice(&req.body).map_err(|e| {
        sf_error(
            400,
            "JSON_PARSER_ERROR",
            &format!("Cannot deserialize the request body: {e}"),
        )
    })?;
    let operation = body["operation"].as_str().unwrap_or("");
    if operation != "query" && operation != "queryAll" {
        return Err(invalid_job(&format!(
            "Invalid operation: '{operation}'. Must be query or queryAll"
        )));
    }
    let delim_name = body["columnDelimiter"].as_str().unwrap_or("COMMA");
    if delimiter(delim_name).is_none() {
        return Err(invalid_job(&format!(
            "Invalid columnDelimiter: {delim_name}"
        )));
    }
    let line_ending = body["lineEnding"].as_str().unwrap_or("LF");
    if line_ending != "LF" && line_ending != "CRLF" {
        return Err(invalid_job(&format!("Invalid lineEnding: {line_ending}")));
    }
    if body["contentType"].as_str().is_some_and(|c| c != "CSV") {
        return Err(invalid_job("Only CSV contentType is supported"));
    }
    let q = body["query"].as_str().unwrap_or("");
    if q.chars().count() > st.max_query_length {
        return Err(sf_error(400, "MALFORMED_QUERY", "Query too long"));
    }
    let objects = st.objects();
    let (query, obj) = soql::parse(q, &objects).map_err(|e| sf_error(400, e.code, &e.message))?;
    // Bulk API 2.0 cannot run aggregates or select compound fields: the
    // job is accepted and then fails.
    let error = if query.count {
        Some(
            "FUNCTIONALITY_NOT_ENABLED: Aggregate queries are not supported in Bulk Query"
                .to_owned(),
        )
    } else if query
        .fields
        .iter()
        .any(|f| obj.field(f).is_some_and(|d| d.is_compound()))
    {
        Some(
            "FUNCTIONALITY_NOT_ENABLED: Selecting compound data not supported in Bulk Query"
                .to_owned(),
        )
    } else if query
        .fields
        .iter()
        .any(|f| obj.field(f).is_some_and(|d| d.ftype == "base64"))
    {
        // As Data Loader and CumulusCI report it (CumulusCI #1662).
        Some("FeatureNotEnabled : Binary field not supported".to_owned())
    } else {
        None
    };
    let seq = st.seq;
    let t = st.table(&query.object).expect("parsed objects exist");
    let ids = if error.is_none() {
        soql::run(&query, t, operation == "queryAll", seq)
    } else {
        Vec::new()
    };
    let job = Job {
        id: id.clone(),
        operation: operation.to_owned(),
        object: t.obj.name.clone(),
        fields: query.fields,
        ids,
        seq,
        live: st.live_cursors,
        state: if error.is_some() {
            "Failed"
        } else {
            "UploadComplete"
        },
        polls: 0,
        created_ms: chrono::Utc::now().timestamp_millis(),
        version: v.to_owned(),
        delimiter: delim_name.to_owned(),
        line_ending: line_ending.to_owned(),
        error,
    };
    let mut info = job.info();
    if job.state == "Failed" {
        // Creation reports UploadComplete; the failure shows on the next poll.
        info["state"] = json!("UploadComplete");
        info.as_object_mut().map(|m| m.remove("errorMessage"));
    }
    st.jobs.0.insert(id, job);
    Ok(ok(info))
}

fn results(st: &State, req: &Request, id: &str) -> Response {
    let Some(job) = st.jobs.0.get(id) else {
        return not_found();
    };
    if job.state != "JobComplete" {
        return sf_error(
            400,
            "INVALIDJOBSTATE",
            &format!(
                "Job state is {}; results are available once it is JobComplete",
                job.state
            ),
        );
    }
    let offset = match req.param("locator").filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => match STANDARD_NO_PAD
            .decode(l.trim_end_matches('='))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
        {
            Some(o) => o,
            None => return sf_error(400, "INVALID_LOCATOR", &format!("Invalid locator: {l}")),
        },
    };
    let max = req
        .param("maxRecords")
        .and_then(|m| m.parse::<usize>().ok())
        .filter(|m| *m > 0)
        .unwrap_or(DEFAULT_MAX_RECORDS);
    let Some(t) = st.table(&job.object) else {
        return not_found();
    };
    let d = delimiter(&job.delimiter).unwrap_or(",");
    let eol = if job.line_ending == "CRLF" {
        "\r\n"
    } else {
        "\n"
    };
    let end = (offset + max).min(job.ids.len());
    let mut out = String::new();
    out.push_str(
        &job.fields
            .iter()
            .map(|f| quote(f))
            .collect::<Vec<_>>()
            .join(d),
    );
    out.push_str(eol);
    let all = job.operation == "queryAll";
    let mut rows = 0;
    for n in &job.ids[offset.min(end)..end] {
        let Some(seq) = visible(t, *n, job.seq, job.live, all) else {
            continue;
        };
        rows += 1;
        let row: Vec<String> = job
            .fields
            .iter()
            .map(|f| {
                let def = t.obj.field(f);
                match t.value(*n, f, seq) {
                    None => String::new(),
                    Some(v) if def.is_some_and(|d| d.ftype == "datetime") => {
                        quote(&parse_dt(&v).map(fmt_dt_z).unwrap_or(v))
                    }
                    Some(v) => quote(&v),
                }
            })
            .collect();
        out.push_str(&row.join(d));
        out.push_str(eol);
    }
    let locator = if end < job.ids.len() {
        STANDARD_NO_PAD.encode(end.to_string())
    } else {
        "null".to_owned()
    };
    Response {
        status: 200,
        headers: vec![("Content-Type".into(), "text/csv".into())],
        body: out.into_bytes(),
    }
    .with_header("Sforce-Locator", locator)
    .with_header("Sforce-NumberOfRecords", rows.to_string())
}

/// RFC 4180 quoting; Salesforce quotes every non-null value.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
