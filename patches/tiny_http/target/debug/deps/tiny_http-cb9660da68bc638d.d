/work/wt-edge/patches/tiny_http/target/debug/deps/tiny_http-cb9660da68bc638d.d: src/lib.rs src/client.rs src/common.rs src/connection.rs src/connections.rs src/head.rs src/options.rs src/request.rs src/response.rs src/ssl.rs src/test.rs src/util/mod.rs src/util/custom_stream.rs src/util/equal_reader.rs src/util/fused_reader.rs src/util/messages_queue.rs src/util/sequential.rs

/work/wt-edge/patches/tiny_http/target/debug/deps/libtiny_http-cb9660da68bc638d.rlib: src/lib.rs src/client.rs src/common.rs src/connection.rs src/connections.rs src/head.rs src/options.rs src/request.rs src/response.rs src/ssl.rs src/test.rs src/util/mod.rs src/util/custom_stream.rs src/util/equal_reader.rs src/util/fused_reader.rs src/util/messages_queue.rs src/util/sequential.rs

/work/wt-edge/patches/tiny_http/target/debug/deps/libtiny_http-cb9660da68bc638d.rmeta: src/lib.rs src/client.rs src/common.rs src/connection.rs src/connections.rs src/head.rs src/options.rs src/request.rs src/response.rs src/ssl.rs src/test.rs src/util/mod.rs src/util/custom_stream.rs src/util/equal_reader.rs src/util/fused_reader.rs src/util/messages_queue.rs src/util/sequential.rs

src/lib.rs:
src/client.rs:
src/common.rs:
src/connection.rs:
src/connections.rs:
src/head.rs:
src/options.rs:
src/request.rs:
src/response.rs:
src/ssl.rs:
src/test.rs:
src/util/mod.rs:
src/util/custom_stream.rs:
src/util/equal_reader.rs:
src/util/fused_reader.rs:
src/util/messages_queue.rs:
src/util/sequential.rs:
