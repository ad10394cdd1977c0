//! Embeds `api/openapi.json` compacted: the file is written for people
//! (indented, about 76 KB), the binary needs only its data (about 45 KB).
//! The image has a size goal (docs/performance.md), and the whitespace was
//! most of what separated the two.

use std::path::Path;

fn main() {
    let source = Path::new("api/openapi.json");
    println!("cargo:rerun-if-changed={}", source.display());
    let text = std::fs::read_to_string(source).expect("api/openapi.json is readable");
    let document: serde_json::Value = serde_json::from_str(&text).expect("api/openapi.json is JSON");
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("openapi.json");
    std::fs::write(&out, document.to_string()).expect("OUT_DIR is writable");
}
