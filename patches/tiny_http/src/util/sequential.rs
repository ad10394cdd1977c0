//! Patch (chaos-backend): upstream's `SequentialWriter` (answers of one
//! connection queued behind each other, each worker waiting for the one
//! before) is gone; see `connections/writer.rs`.

use std::io::Read;
use std::io::Result as IoResult;

use std::sync::mpsc::channel;
use std::sync::mpsc::{Receiver, Sender};

use std::mem;

pub struct SequentialReaderBuilder<R>
where
    R: Read + Send,
{
    inner: SequentialReaderBuilderInner<R>,
}

enum SequentialReaderBuilderInner<R>
where
    R: Read + Send,
{
    First(R),
    NotFirst(Receiver<R>),
}

pub struct SequentialReader<R>
where
    R: Read + Send,
{
    inner: SequentialReaderInner<R>,
    next: Sender<R>,
}

enum SequentialReaderInner<R>
where
    R: Read + Send,
{
    MyTurn(R),
    Waiting(Receiver<R>),
    Empty,
}

impl<R: Read + Send> SequentialReaderBuilder<R> {
    pub fn new(reader: R) -> SequentialReaderBuilder<R> {
        SequentialReaderBuilder {
            inner: SequentialReaderBuilderInner::First(reader),
        }
    }
}

impl<R: Read + Send> Iterator for SequentialReaderBuilder<R> {
    type Item = SequentialReader<R>;

    fn next(&mut self) -> Option<SequentialReader<R>> {
        let (tx, rx) = channel();

        let inner = mem::replace(&mut self.inner, SequentialReaderBuilderInner::NotFirst(rx));

        match inner {
            SequentialReaderBuilderInner::First(reader) => Some(SequentialReader {
                inner: SequentialReaderInner::MyTurn(reader),
                next: tx,
            }),

            SequentialReaderBuilderInner::NotFirst(previous) => Some(SequentialReader {
                inner: SequentialReaderInner::Waiting(previous),
                next: tx,
            }),
        }
    }
}

impl<R: Read + Send> SequentialReader<R> {
    /// Patch (chaos-backend): runs `f` on the underlying reader once it is
    /// this reader's turn (the previous request is done with it), so that
    /// the connection's thread can drain an unread body and wait for the
    /// next head's first byte (`fill_buf`). None if the previous holder
    /// vanished without handing it back.
    pub fn with_inner<T>(&mut self, f: impl FnOnce(&mut R) -> T) -> Option<T> {
        if let SequentialReaderInner::Waiting(recv) = &self.inner {
            let reader = recv.recv().ok()?;
            self.inner = SequentialReaderInner::MyTurn(reader);
        }
        match self.inner {
            SequentialReaderInner::MyTurn(ref mut reader) => Some(f(reader)),
            _ => None,
        }
    }
}

impl<R: Read + Send> Read for SequentialReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        let mut reader = match self.inner {
            SequentialReaderInner::MyTurn(ref mut reader) => return reader.read(buf),
            SequentialReaderInner::Waiting(ref mut recv) => recv.recv().unwrap(),
            SequentialReaderInner::Empty => unreachable!(),
        };

        let result = reader.read(buf);
        self.inner = SequentialReaderInner::MyTurn(reader);
        result
    }
}

impl<R> Drop for SequentialReader<R>
where
    R: Read + Send,
{
    fn drop(&mut self) {
        let inner = mem::replace(&mut self.inner, SequentialReaderInner::Empty);

        match inner {
            SequentialReaderInner::MyTurn(reader) => {
                self.next.send(reader).ok();
            }
            // Patch (chaos-backend): upstream waited here for the previous
            // holder (a request still in the workers' queue) to hand the
            // reader back, so a connection closed at the cap kept its
            // thread until a worker reached that request. Only the
            // connection's own next-head reader is ever dropped while
            // waiting, and nothing reads after it: let it go.
            SequentialReaderInner::Waiting(_) => (),
            SequentialReaderInner::Empty => (),
        }
    }
}
