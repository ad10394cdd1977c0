//! `POST /crash`: answers 202, and once the answer is flushed, writes the
//! crash marker and aborts. Not subject to the guardrails, as in the seed.

use serde_json::json;

use super::bad;
use crate::app::App;
use crate::http::{After, Reply};
use crate::query::Query;

pub fn crash(app: &App, raw_query: &str) -> Reply {
    if let Err(e) = Query::parse(raw_query, &[]) {
        return bad(e);
    }
    app.metrics.chaos("crash", "accepted");
    Reply::accepted(&json!({"status": "crashing", "mode": "abort"})).then(After::Abort {
        cause: "POST /crash".to_string(),
    })
}
