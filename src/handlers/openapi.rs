//! `GET /openapi.json`: the OpenAPI 3.1 document of this service
//! (`api/openapi.json`, embedded at build time). Like the probes it is never
//! subject to faults and is not user traffic.
//!
//! One bound depends on where the process runs: the most `millicores` it may
//! burn. The served document carries it as that parameter's `maximum`, from
//! the same `CpuBudget` that `POST /load/cpu` checks against.
//!
//! The document (about 45 KB) is rendered once, at the first request, and
//! every answer shares that one buffer: a thousand clients that do not read
//! their answers hold a thousand heads, not a thousand copies (copies took
//! RSS to 120 MiB and failed readiness).

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::chaos::cpu::CpuBudget;
use crate::http::reply::Reply;

/// The document as written in the repository, compacted by build.rs.
pub const DOCUMENT: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

pub fn get() -> Reply {
    static RENDERED: OnceLock<Result<Arc<[u8]>, String>> = OnceLock::new();
    let rendered = RENDERED.get_or_init(|| {
        served(CpuBudget::detect().millicores()).map(|doc| {
            let mut body = doc.to_string().into_bytes();
            body.push(b'\n');
            Arc::from(body)
        })
    });
    match rendered {
        Ok(body) => Reply::shared(200, "application/json", Arc::clone(body)),
        Err(e) => {
            log::error!("cannot serve the OpenAPI document: {e}");
            Reply::internal_error(&format!("cannot serve the OpenAPI document: {e}"))
        }
    }
}

/// The document with the `millicores` maximum filled in.
pub fn served(max_millicores: u64) -> Result<Value, String> {
    let mut doc: Value = serde_json::from_str(DOCUMENT).map_err(|e| format!("api/openapi.json is not JSON: {e}"))?;
    let millicores = doc
        .pointer_mut("/paths/~1load~1cpu/post/parameters")
        .and_then(Value::as_array_mut)
        .and_then(|ps| ps.iter_mut().find(|p| p["name"] == "millicores"))
        .and_then(|p| p.get_mut("schema"))
        .and_then(Value::as_object_mut)
        .ok_or("api/openapi.json has no millicores parameter on POST /load/cpu")?;
    millicores.insert("maximum".to_string(), max_millicores.into());
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("api/openapi.json is JSON")
    }

    #[test]
    fn version_is_the_crates() {
        let doc = document();
        assert_eq!(
            doc["info"]["version"],
            env!("CARGO_PKG_VERSION"),
            "api/openapi.json info.version"
        );
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    }

    #[test]
    fn every_answer_shares_one_rendered_document() {
        let shared = |r: Reply| match r.body {
            crate::http::reply::Body::Shared(bytes) => bytes,
            other => panic!("not shared: {other:?}"),
        };
        let (a, b) = (shared(get()), shared(get()));
        assert!(Arc::ptr_eq(&a, &b), "one buffer for every answer");
        let doc: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(doc["openapi"], document()["openapi"]);
        assert!(a.ends_with(b"}\n"));
    }

    #[test]
    fn served_document_carries_the_millicores_maximum() {
        let doc = served(1500).unwrap();
        let ps = doc
            .pointer("/paths/~1load~1cpu/post/parameters")
            .unwrap()
            .as_array()
            .unwrap();
        let m = ps.iter().find(|p| p["name"] == "millicores").unwrap();
        assert_eq!(m["schema"]["maximum"], 1500);
        assert_eq!(m["schema"]["minimum"], 1);
    }
}
