//! Printing a result: JSON for scripts, a table for people.

use serde_json::Value;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Prints `json` or the table `table` renders.
pub fn emit(format: Format, json: Value, table: impl FnOnce() -> String) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default()),
        Format::Table => println!("{}", table()),
    }
}

/// An empty table with these headers.
pub fn table(headers: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(headers.to_vec());
    t
}
