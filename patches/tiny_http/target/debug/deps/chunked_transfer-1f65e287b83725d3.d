/work/wt-edge/patches/tiny_http/target/debug/deps/chunked_transfer-1f65e287b83725d3.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/decoder.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/encoder.rs

/work/wt-edge/patches/tiny_http/target/debug/deps/libchunked_transfer-1f65e287b83725d3.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/decoder.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/encoder.rs

/work/wt-edge/patches/tiny_http/target/debug/deps/libchunked_transfer-1f65e287b83725d3.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/decoder.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/encoder.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/decoder.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/chunked_transfer-1.5.0/src/encoder.rs:
