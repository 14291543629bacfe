//! `crm-mock hubspot [--port N] [--seed N] [--contacts N] [--companies N]
//! [--deals N] [--token T] [--search-rate-limit N] [--shared-people N] [--gzip]`
//!
//! `crm-mock salesforce [--port N] [--seed N] [--accounts N] [--contacts N]
//! [--leads N] [--opportunities N] [--users N] [--invoices N] [--tasks N] [--client-id S]
//! [--client-secret S] [--refresh-token S] [--username S]
//! [--jwt-public-key PEMPATH] [--session-calls N] [--daily-api-limit N]
//! [--max-query-length N] [--bulk-polls N] [--shared-people N] [--live-cursors]
//! [--gzip]`
//!
//! `--shared-people N` (both mocks, for the demo): the first N contacts and
//! N/4 companies are the same people and companies in both mocks, each
//! written its own way (see `people.rs`).
//!
//! `crm-mock pipedrive [--port N] [--seed N] [--persons N] [--organizations N]
//! [--deals N] [--activities N] [--users N] [--token T] [--client-id S]
//! [--client-secret S] [--refresh-token S] [--shared-people N] [--gzip]`
//!
//! `crm-mock dynamics [--port N] [--seed N] [--contacts N] [--accounts N]
//! [--leads N] [--opportunities N] [--users N] [--projects N] [--tenant S]
//! [--client-id S] [--client-secret S] [--token-ttl SECONDS] [--client-cert PEMPATH]
//! [--client-cert-key PUBLICKEYPEMPATH] [--shared-people N] [--gzip]`
//!
//! `crm-mock zoho [--port N] [--seed N] [--contacts N] [--accounts N]
//! [--leads N] [--deals N] [--users N] [--client-id S] [--client-secret S]
//! [--refresh-token S] [--token-limit N] [--daily-credits N] [--token-ttl SECONDS]
//! [--shared-people N] [--gzip]`
//!
//! Prints `listening on 127.0.0.1:PORT` once ready, then serves until killed.

use std::io::Write;
use std::sync::Arc;

use crm_mock::dynamics::{self, DynamicsMock};
use crm_mock::hubspot::{HubSpotMock, Options};
use crm_mock::pipedrive::{self, PipedriveMock};
use crm_mock::salesforce::{self, SalesforceMock};
use crm_mock::server::Handler;
use crm_mock::zoho::{self, ZohoMock};

const USAGE: &str = "usage: crm-mock hubspot [--port N] [--seed N] [--contacts N] [--companies N] \
[--deals N] [--token T] [--search-rate-limit N] [--shared-people N] [--gzip]
       crm-mock salesforce [--port N] [--seed N] [--accounts N] [--contacts N] [--leads N] \
[--opportunities N] [--users N] [--invoices N] [--tasks N] [--client-id S] [--client-secret S] \
[--refresh-token S] [--username S] [--jwt-public-key PEMPATH] [--session-calls N] \
[--daily-api-limit N] [--max-query-length N] [--bulk-polls N] [--shared-people N] \
[--live-cursors] [--gzip]
       crm-mock pipedrive [--port N] [--seed N] [--persons N] [--organizations N] [--deals N] \
[--activities N] [--users N] [--token T] [--client-id S] [--client-secret S] [--refresh-token S] \
[--shared-people N] [--gzip]
       crm-mock dynamics [--port N] [--seed N] [--contacts N] [--accounts N] [--leads N] \
[--opportunities N] [--users N] [--projects N] [--tenant S] [--client-id S] [--client-secret S] \
[--token-ttl SECONDS] [--client-cert PEMPATH] [--client-cert-key PUBLICKEYPEMPATH] [--shared-people N] [--gzip]
       crm-mock zoho [--port N] [--seed N] [--contacts N] [--accounts N] [--leads N] [--deals N] \
[--users N] [--client-id S] [--client-secret S] [--refresh-token S] [--token-limit N] \
[--daily-credits N] [--token-ttl SECONDS] [--shared-people N] [--gzip]";

/// Largest seeded count a mock starts with.
const MAX_COUNT: u64 = 5_000_000;

fn parse(args: &[String]) -> Result<(u16, Arc<dyn Handler>), String> {
    match args.first().map(String::as_str) {
        Some("hubspot") => {
            let (port, o) = parse_hubspot(&args[1..])?;
            Ok((port, Arc::new(HubSpotMock::new(o))))
        }
        Some("salesforce") => {
            let (port, o) = parse_salesforce(&args[1..])?;
            Ok((port, Arc::new(SalesforceMock::new(o)?)))
        }
        Some("pipedrive") => {
            let (port, o) = parse_pipedrive(&args[1..])?;
            Ok((port, Arc::new(PipedriveMock::new(o))))
        }
        Some("dynamics") => {
            let (port, o) = parse_dynamics(&args[1..])?;
            Ok((port, Arc::new(DynamicsMock::new(o))))
        }
        Some("zoho") => {
            let (port, o) = parse_zoho(&args[1..])?;
            Ok((port, Arc::new(ZohoMock::new(o))))
        }
        Some(other) => Err(format!("unknown mock {other:?}")),
        None => Err("which mock?".into()),
    }
}

fn port_of(n: u64) -> Result<u16, String> {
    n.try_into().map_err(|_| "port out of range".to_string())
}

fn check_counts(counts: &[(&str, u64)]) -> Result<(), String> {
    for (what, n) in counts {
        if *n > MAX_COUNT {
            return Err(format!("--{what} {n}: at most 5,000,000"));
        }
    }
    Ok(())
}

/// One `--flag value` pair.
struct Flag<'a> {
    name: &'a str,
    val: &'a str,
}

impl Flag<'_> {
    fn num(&self) -> Result<u64, String> {
        self.val
            .parse::<u64>()
            .map_err(|_| format!("{}: not a number: {}", self.name, self.val))
    }

    fn text(&self) -> String {
        self.val.to_owned()
    }

    fn unknown(&self) -> Result<(), String> {
        Err(format!("unknown option {}", self.name))
    }
}

/// The flag loop both mocks share: switches without a value (`--gzip` and
/// the mock's own), `--port` and `--seed` are handled here, every other
/// flag and its value go to `set`. Returns the port.
fn parse_flags(
    args: &[String],
    switches: &mut [(&str, &mut bool)],
    seed: &mut u64,
    mut set: impl FnMut(&Flag) -> Result<(), String>,
) -> Result<u16, String> {
    let mut it = args.iter();
    let mut port = 0u16;
    while let Some(flag) = it.next() {
        if let Some((_, on)) = switches.iter_mut().find(|(name, _)| name == flag) {
            **on = true;
            continue;
        }
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let f = Flag { name: flag, val };
        match f.name {
            "--port" => port = port_of(f.num()?)?,
            "--seed" => *seed = f.num()?,
            _ => set(&f)?,
        }
    }
    Ok(port)
}

fn parse_salesforce(args: &[String]) -> Result<(u16, salesforce::Options), String> {
    let mut o = salesforce::Options::default();
    let (mut gzip, mut live) = (false, false);
    let switches = &mut [("--gzip", &mut gzip), ("--live-cursors", &mut live)];
    let port = parse_flags(args, switches, &mut o.seed, |f| {
        match f.name {
            "--accounts" => o.accounts = f.num()?,
            "--contacts" => o.contacts = f.num()?,
            "--leads" => o.leads = f.num()?,
            "--opportunities" => o.opportunities = f.num()?,
            "--users" => o.users = f.num()?,
            "--invoices" => o.invoices = f.num()?,
            "--tasks" => o.tasks = f.num()?,
            "--client-id" => o.client_id = f.text(),
            "--client-secret" => o.client_secret = f.text(),
            "--refresh-token" => o.refresh_token = f.text(),
            "--username" => o.username = f.text(),
            "--jwt-public-key" => {
                o.jwt_public_key = Some(
                    std::fs::read_to_string(f.val)
                        .map_err(|e| format!("{} {}: {e}", f.name, f.val))?,
                )
            }
            "--session-calls" => o.session_calls = f.num()?,
            "--daily-api-limit" => o.daily_api_limit = f.num()?,
            "--max-query-length" => o.max_query_length = f.num()? as usize,
            "--bulk-polls" => o.bulk_polls = f.num()?,
            "--shared-people" => o.shared_people = f.num()?,
            _ => return f.unknown(),
        }
        Ok(())
    })?;
    o.gzip = gzip;
    o.live_cursors = live;
    check_counts(&[
        ("accounts", o.accounts),
        ("contacts", o.contacts),
        ("leads", o.leads),
        ("opportunities", o.opportunities),
        ("users", o.users),
        ("invoices", o.invoices),
        ("tasks", o.tasks),
    ])?;
    Ok((port, o))
}

fn parse_pipedrive(args: &[String]) -> Result<(u16, pipedrive::Options), String> {
    let mut o = pipedrive::Options::default();
    let mut gzip = false;
    let port = parse_flags(args, &mut [("--gzip", &mut gzip)], &mut o.seed, |f| {
        match f.name {
            "--persons" => o.persons = f.num()?,
            "--organizations" => o.organizations = f.num()?,
            "--deals" => o.deals = f.num()?,
            "--activities" => o.activities = f.num()?,
            "--users" => o.users = f.num()?,
            "--token" => o.token = f.text(),
            "--client-id" => o.client_id = f.text(),
            "--client-secret" => o.client_secret = f.text(),
            "--refresh-token" => o.refresh_token = f.text(),
            "--shared-people" => o.shared_people = f.num()?,
            _ => return f.unknown(),
        }
        Ok(())
    })?;
    check_counts(&[
        ("persons", o.persons),
        ("organizations", o.organizations),
        ("deals", o.deals),
        ("activities", o.activities),
        ("users", o.users),
    ])?;
    o.gzip = gzip;
    Ok((port, o))
}

fn parse_dynamics(args: &[String]) -> Result<(u16, dynamics::Options), String> {
    let mut o = dynamics::Options::default();
    let mut gzip = false;
    let port = parse_flags(args, &mut [("--gzip", &mut gzip)], &mut o.seed, |f| {
        match f.name {
            "--contacts" => o.contacts = f.num()?,
            "--accounts" => o.accounts = f.num()?,
            "--leads" => o.leads = f.num()?,
            "--opportunities" => o.opportunities = f.num()?,
            "--users" => o.users = f.num()?,
            "--projects" => o.projects = f.num()?,
            "--tenant" => o.tenant = f.text(),
            "--client-id" => o.client_id = f.text(),
            "--client-secret" => o.client_secret = f.text(),
            "--token-ttl" => o.token_ttl = f.num()?,
            "--client-cert" => {
                o.client_cert = Some(
                    std::fs::read_to_string(f.val)
                        .map_err(|e| format!("{} {}: {e}", f.name, f.val))?,
                )
            }
            "--client-cert-key" => {
                o.client_cert_key = Some(
                    std::fs::read_to_string(f.val)
                        .map_err(|e| format!("{} {}: {e}", f.name, f.val))?,
                )
            }
            "--shared-people" => o.shared_people = f.num()?,
            _ => return f.unknown(),
        }
        Ok(())
    })?;
    check_counts(&[
        ("contacts", o.contacts),
        ("accounts", o.accounts),
        ("leads", o.leads),
        ("opportunities", o.opportunities),
        ("users", o.users),
        ("projects", o.projects),
    ])?;
    o.gzip = gzip;
    Ok((port, o))
}

fn parse_zoho(args: &[String]) -> Result<(u16, zoho::Options), String> {
    let mut o = zoho::Options::default();
    let mut gzip = false;
    let port = parse_flags(args, &mut [("--gzip", &mut gzip)], &mut o.seed, |f| {
        match f.name {
            "--contacts" => o.contacts = f.num()?,
            "--accounts" => o.accounts = f.num()?,
            "--leads" => o.leads = f.num()?,
            "--deals" => o.deals = f.num()?,
            "--users" => o.users = f.num()?,
            "--client-id" => o.client_id = f.text(),
            "--client-secret" => o.client_secret = f.text(),
            "--refresh-token" => o.refresh_token = f.text(),
            "--token-limit" => o.token_limit = f.num()?,
            "--daily-credits" => o.daily_credits = f.num()?,
            "--token-ttl" => o.token_ttl = f.num()?,
            "--shared-people" => o.shared_people = f.num()?,
            _ => return f.unknown(),
        }
        Ok(())
    })?;
    check_counts(&[
        ("contacts", o.contacts),
        ("accounts", o.accounts),
        ("leads", o.leads),
        ("deals", o.deals),
        ("users", o.users),
    ])?;
    o.gzip = gzip;
    Ok((port, o))
}

fn parse_hubspot(args: &[String]) -> Result<(u16, Options), String> {
    let mut o = Options::default();
    let mut gzip = false;
    let port = parse_flags(args, &mut [("--gzip", &mut gzip)], &mut o.seed, |f| {
        match f.name {
            "--contacts" => o.contacts = f.num()?,
            "--companies" => o.companies = f.num()?,
            "--deals" => o.deals = f.num()?,
            "--token" => o.token = f.text(),
            "--search-rate-limit" => o.search_rate_limit = f.num()? as u32,
            "--shared-people" => o.shared_people = f.num()?,
            _ => return f.unknown(),
        }
        Ok(())
    })?;
    check_counts(&[
        ("contacts", o.contacts),
        ("companies", o.companies),
        ("deals", o.deals),
    ])?;
    o.gzip = gzip;
    Ok((port, o))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (port, mock) = match parse(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("crm-mock: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let port = match crm_mock::start(port, mock).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("crm-mock: cannot listen on 127.0.0.1:{port}: {e}");
                std::process::exit(1);
            }
        };
        println!("listening on 127.0.0.1:{port}");
        let _ = std::io::stdout().flush();
        std::future::pending::<()>().await;
    });
}
