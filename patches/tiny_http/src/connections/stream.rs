//! Patch (chaos-backend): what the request reader reads through: the
//! connection's socket (`SharedStream`), and a counter of the body bytes a
//! handler reads (`CountingReader`).

use std::io::{self, ErrorKind, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::conn::{Conn, Expiry};

/// The read side of a connection, as its `BufReader` sees it.
pub(crate) struct SharedStream(pub(crate) Arc<Conn>);

impl Read for SharedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let conn = &self.0;
        loop {
            let windows = conn.windows_closed.load(Ordering::Acquire);
            match conn.stream.read_ref(buf) {
                // The watchdog shut the read side: the head came too slowly.
                Ok(0) if conn.expired() == Some(Expiry::HeadTimeout) => {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        "the request head did not arrive in time",
                    ))
                }
                // The socket is shared with the writer of answers, which
                // makes it non-blocking for one write at a time
                // (`Conn::write_now`): a read that starts inside such a
                // window gets `WouldBlock`. Wait for the window to close
                // (its lock), then read again, but only if a window did
                // close since this read began: every retry is paid for by
                // one write, none is a spin, and a `WouldBlock` of another
                // cause (a receive timeout set on the socket) is returned.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    drop(conn.window());
                    if conn.windows_closed.load(Ordering::Acquire) == windows {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }
}

/// Counts the body bytes read by whoever holds the request's reader, so
/// that the connection's thread knows what is left to drain.
pub(crate) struct CountingReader<R> {
    inner: R,
    conn: Arc<Conn>,
}

impl<R> CountingReader<R> {
    pub(crate) fn new(inner: R, conn: &Arc<Conn>) -> Self {
        CountingReader {
            inner,
            conn: Arc::clone(conn),
        }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.conn.body_read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Connection;
    use crate::connections::Table;
    use crate::ConnectionLimits;
    use std::io::Write;
    use std::time::Duration;

    /// A connection admitted to a fresh table, and its client's end.
    fn connection() -> (Arc<Conn>, std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let raw = server.try_clone().unwrap();
        let table = Table::new(ConnectionLimits::default());
        let conn = table.admit(Connection::from(server)).expect("admitted");
        (conn, client, raw)
    }

    #[test]
    fn a_read_inside_a_writers_window_waits_for_it_and_reads_on() {
        let (conn, mut client, raw) = connection();
        // A writer's window, by hand: the socket is non-blocking while
        // the lock is held.
        let window = conn.window();
        raw.set_nonblocking(true).unwrap();
        let reader = {
            let conn = Arc::clone(&conn);
            std::thread::spawn(move || {
                let mut buf = [0u8; 5];
                SharedStream(conn).read(&mut buf).map(|n| buf[..n].to_vec())
            })
        };
        // Let the reader meet the window (if it comes later, its read
        // simply blocks: the outcome is the same).
        std::thread::sleep(Duration::from_millis(50));
        raw.set_nonblocking(false).unwrap();
        conn.windows_closed.fetch_add(1, Ordering::Release);
        drop(window);
        client.write_all(b"hello").unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), b"hello".to_vec());
    }

    #[test]
    fn a_would_block_that_no_window_caused_is_returned_not_retried() {
        let (conn, _client, raw) = connection();
        // A receive timeout set by the socket's owner: its `WouldBlock`
        // must reach the caller (upstream behaviour), not spin.
        raw.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 5];
        let err = SharedStream(conn).read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
    }
}
