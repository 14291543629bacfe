//! `crm-mock hubspot [--port N] [--seed N] [--contacts N] [--companies N]
//! [--deals N] [--token T] [--search-rate-limit N] [--gzip]`
//!
//! `crm-mock salesforce [--port N] [--seed N] [--accounts N] [--contacts N]
//! [--leads N] [--opportunities N] [--users N] [--invoices N] [--client-id S]
//! [--client-secret S] [--refresh-token S] [--username S]
//! [--jwt-public-key PEMPATH] [--session-calls N] [--daily-api-limit N]
//! [--max-query-length N] [--bulk-polls N] [--gzip]`
//!
//! Prints `listening on 127.0.0.1:PORT` once ready, then serves until killed.

use std::io::Write;
use std::sync::Arc;

use crm_mock::hubspot::{HubSpotMock, Options};
use crm_mock::salesforce::{self, SalesforceMock};
use crm_mock::server::Handler;

const USAGE: &str = "usage: crm-mock hubspot [--port N] [--seed N] [--contacts N] [--companies N] \
[--deals N] [--token T] [--search-rate-limit N] [--gzip]
       crm-mock salesforce [--port N] [--seed N] [--accounts N] [--contacts N] [--leads N] \
[--opportunities N] [--users N] [--invoices N] [--client-id S] [--client-secret S] \
[--refresh-token S] [--username S] [--jwt-public-key PEMPATH] [--session-calls N] \
[--daily-api-limit N] [--max-query-length N] [--bulk-polls N] [--gzip]";

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

fn parse_salesforce(args: &[String]) -> Result<(u16, salesforce::Options), String> {
    let mut it = args.iter();
    let mut port = 0u16;
    let mut o = salesforce::Options::default();
    while let Some(flag) = it.next() {
        if flag == "--gzip" {
            o.gzip = true;
            continue;
        }
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || {
            val.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {val}"))
        };
        match flag.as_str() {
            "--port" => port = port_of(num()?)?,
            "--seed" => o.seed = num()?,
            "--accounts" => o.accounts = num()?,
            "--contacts" => o.contacts = num()?,
            "--leads" => o.leads = num()?,
            "--opportunities" => o.opportunities = num()?,
            "--users" => o.users = num()?,
            "--invoices" => o.invoices = num()?,
            "--client-id" => o.client_id = val.clone(),
            "--client-secret" => o.client_secret = val.clone(),
            "--refresh-token" => o.refresh_token = val.clone(),
            "--username" => o.username = val.clone(),
            "--jwt-public-key" => {
                o.jwt_public_key =
                    Some(std::fs::read_to_string(val).map_err(|e| format!("{flag} {val}: {e}"))?)
            }
            "--session-calls" => o.session_calls = num()?,
            "--daily-api-limit" => o.daily_api_limit = num()?,
            "--max-query-length" => o.max_query_length = num()? as usize,
            "--bulk-polls" => o.bulk_polls = num()?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    check_counts(&[
        ("accounts", o.accounts),
        ("contacts", o.contacts),
        ("leads", o.leads),
        ("opportunities", o.opportunities),
        ("users", o.users),
        ("invoices", o.invoices),
    ])?;
    Ok((port, o))
}

fn parse_hubspot(args: &[String]) -> Result<(u16, Options), String> {
    let mut it = args.iter();
    let mut port = 0u16;
    let mut o = Options::default();
    while let Some(flag) = it.next() {
        if flag == "--gzip" {
            o.gzip = true;
            continue;
        }
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || {
            val.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {val}"))
        };
        match flag.as_str() {
            "--port" => port = port_of(num()?)?,
            "--seed" => o.seed = num()?,
            "--contacts" => o.contacts = num()?,
            "--companies" => o.companies = num()?,
            "--deals" => o.deals = num()?,
            "--token" => o.token = val.clone(),
            "--search-rate-limit" => o.search_rate_limit = num()? as u32,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    check_counts(&[
        ("contacts", o.contacts),
        ("companies", o.companies),
        ("deals", o.deals),
    ])?;
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
