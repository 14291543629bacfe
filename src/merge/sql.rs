//! What the merge steps share in the SQL they build.

/// Rows per page: every step reads in pages of this many, each in its own
/// SPI connection, so memory stays flat however large the model.
pub const FETCH: i64 = 5_000;

/// `s` quoted as an identifier (always, unlike `quote_ident`).
pub fn qi(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
