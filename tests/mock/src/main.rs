//! `crm-mock hubspot [--port N] [--seed N] [--contacts N] [--companies N]
//! [--deals N] [--token T] [--search-rate-limit N] [--gzip]`
//!
//! Prints `listening on 127.0.0.1:PORT` once ready, then serves until killed.

use std::io::Write;
use std::sync::Arc;

use crm_mock::hubspot::{HubSpotMock, Options};

const USAGE: &str = "usage: crm-mock hubspot [--port N] [--seed N] [--contacts N] [--companies N] \
[--deals N] [--token T] [--search-rate-limit N] [--gzip]";

fn parse(args: &[String]) -> Result<(u16, Options), String> {
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("hubspot") => {}
        Some(other) => return Err(format!("unknown mock {other:?}")),
        None => return Err("which mock?".into()),
    }
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
            "--port" => {
                port = num()?
                    .try_into()
                    .map_err(|_| "port out of range".to_string())?
            }
            "--seed" => o.seed = num()?,
            "--contacts" => o.contacts = num()?,
            "--companies" => o.companies = num()?,
            "--deals" => o.deals = num()?,
            "--token" => o.token = val.clone(),
            "--search-rate-limit" => o.search_rate_limit = num()? as u32,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    for (what, n) in [
        ("contacts", o.contacts),
        ("companies", o.companies),
        ("deals", o.deals),
    ] {
        if n > 5_000_000 {
            return Err(format!("--{what} {n}: at most 5,000,000"));
        }
    }
    Ok((port, o))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (port, opts) = match parse(&args) {
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
        let mock = Arc::new(HubSpotMock::new(opts));
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
