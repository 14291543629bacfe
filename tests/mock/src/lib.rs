//! Mock CRM servers for pg_crm_sync: behave like the vendor's API (paths,
//! JSON shapes, paging, limits, error bodies, auth, rate limits) on
//! 127.0.0.1, with admin endpoints to change data and inject faults.

// Salesforce describe bodies are large `json!` literals.
#![recursion_limit = "256"]

pub mod data;
pub mod dynamics;
pub mod faults;
pub mod hubspot;
mod mock;
pub mod people;
pub mod pipedrive;
pub mod salesforce;
pub mod server;
pub mod store;
pub mod zoho;

use std::sync::Arc;

use tokio::net::TcpListener;

/// Bind 127.0.0.1:`port` (0 picks one) and serve `handler` until the
/// runtime stops. Returns the bound port once listening.
pub async fn start(port: u16, handler: Arc<dyn server::Handler>) -> std::io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(server::serve(listener, handler));
    Ok(port)
}

/// Start the mock `make` builds on a runtime of its own, on a thread of its
/// own, for tests run from another crate or runtime; returns its port once
/// it listens. The mock serves until the process ends.
pub fn start_in_background<H: server::Handler>(make: impl FnOnce() -> H + Send + 'static) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("mock runtime");
        rt.block_on(async move {
            let port = start(0, Arc::new(make())).await.expect("mock listens");
            tx.send(port).expect("caller waits");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("mock thread started")
}
