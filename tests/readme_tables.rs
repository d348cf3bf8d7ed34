//! The README's two reference tables against the code: the configuration table against
//! `sms_sender::config::vars::VARS`, the metrics table against what `GET /metrics` renders.
//!
//! Invariant: every variable the service reads has a README row with the same default, and every
//! variable a README row names is one the service reads; every metric family on the page has a
//! README row with the same type, and every metric a README row names is on the page.

use std::collections::BTreeMap;

use sms_sender::config::vars::VARS;
use sms_sender::ops::metrics::{Gauges, Metrics};
use sms_sender::twilio::receipts::{render_metrics, InboxCounts};

const README: &str = include_str!("../README.md");

/// The rows of the first Markdown table after the line starting with `marker`: the names in
/// backquotes in the first cell, each with the second cell.
fn table_after(readme: &str, marker: &str) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    let Some(start) = readme.find(marker) else {
        return rows;
    };
    let table = readme[start..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2);
    for row in table {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (first, second) = (cells.get(1).copied(), cells.get(2).copied());
        let (Some(first), Some(second)) = (first, second) else {
            continue;
        };
        for name in first.split('`').skip(1).step_by(2) {
            rows.insert(name.to_string(), second.to_string());
        }
    }
    rows
}

/// What differs between `readme`'s configuration table and the code's table.
fn config_drift(readme: &str) -> Vec<String> {
    let rows = table_after(readme, "## Configuration");
    let mut drift = Vec::new();
    for var in VARS {
        match rows.get(var.name) {
            None => drift.push(format!("{} has no README row", var.name)),
            Some(default) if *default != var.readme_default() => drift.push(format!(
                "{}: the README says {default}, the code {}",
                var.name,
                var.readme_default()
            )),
            Some(_) => {}
        }
    }
    for name in rows.keys() {
        if !VARS.iter().any(|v| v.name == name) {
            drift.push(format!(
                "the README names {name}, which the code does not read"
            ));
        }
    }
    drift
}

/// Every family on the `/metrics` page, with its type.
fn rendered_families() -> BTreeMap<String, String> {
    let mut page = Metrics::default().render(Gauges::default());
    render_metrics(InboxCounts::default(), &mut page);
    page.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// What differs between `readme`'s metrics table and the page.
fn metrics_drift(readme: &str) -> Vec<String> {
    let rows = table_after(readme, "**Metrics.**");
    let families = rendered_families();
    let mut drift = Vec::new();
    for (name, kind) in &families {
        match rows.get(name) {
            None => drift.push(format!("{name} has no README row")),
            Some(documented) if documented != kind => drift.push(format!(
                "{name}: the README says {documented}, the page {kind}"
            )),
            Some(_) => {}
        }
    }
    for name in rows.keys() {
        if !families.contains_key(name) {
            drift.push(format!(
                "the README names {name}, which /metrics does not show"
            ));
        }
    }
    drift
}

#[test]
fn the_readme_configuration_table_matches_the_code() {
    let drift = config_drift(README);
    assert!(
        drift.is_empty(),
        "README.md, Configuration:\n{}",
        drift.join("\n")
    );
}

#[test]
fn the_readme_metrics_table_matches_the_page() {
    let drift = metrics_drift(README);
    assert!(
        drift.is_empty(),
        "README.md, Metrics:\n{}",
        drift.join("\n")
    );
}

#[test]
fn the_checks_see_a_missing_row_a_wrong_default_and_an_unknown_name() {
    let config = "## Configuration\n\n| variable | default | meaning |\n|---|---|---|\n";
    let mut readme = config.to_string();
    for var in VARS {
        readme.push_str(&format!(
            "| `{}` | {} | x |\n",
            var.name,
            var.readme_default()
        ));
    }
    assert_eq!(config_drift(&readme), Vec::<String>::new());
    let wrong = readme.replace("| `PORT` | `8080` |", "| `PORT` | `80` |");
    assert_eq!(
        config_drift(&wrong),
        ["PORT: the README says `80`, the code `8080`"]
    );
    let missing = readme.replace("| `RUST_LOG` |", "| RUST_LOG |");
    assert_eq!(config_drift(&missing), ["RUST_LOG has no README row"]);
    let unknown = format!("{readme}| `NO_SUCH_VAR` | `1` | x |\n");
    assert_eq!(
        config_drift(&unknown),
        ["the README names NO_SUCH_VAR, which the code does not read"]
    );

    let mut metrics =
        "**Metrics.**\n\n| metric | type | labels | meaning |\n|---|---|---|---|\n".to_string();
    for (name, kind) in rendered_families() {
        metrics.push_str(&format!("| `{name}` | {kind} | | x |\n"));
    }
    assert_eq!(metrics_drift(&metrics), Vec::<String>::new());
    let wrong = metrics.replace(
        "| `sms_sender_queue_depth` | gauge |",
        "| `sms_sender_queue_depth` | counter |",
    );
    assert_eq!(
        metrics_drift(&wrong),
        ["sms_sender_queue_depth: the README says counter, the page gauge"]
    );
    let unknown = format!("{metrics}| `sms_sender_nothing_total` | counter | | x |\n");
    assert_eq!(
        metrics_drift(&unknown),
        ["the README names sms_sender_nothing_total, which /metrics does not show"]
    );
}
