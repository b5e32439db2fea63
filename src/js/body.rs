//! Bodies that cross the engine boundary: bytes held in memory, or a stream of
//! chunks through a bounded channel, so a body of any size passes through with
//! bounded memory.
//!
//! A stream has two ends: a [`BodySink`] that writes chunks and then finishes or
//! fails, and a [`BodyStream`] that reads them. A sink dropped without
//! `finish()` (its isolate died, its task was cancelled) makes the reader see an
//! error rather than a clean end, so a truncated body is never mistaken for a
//! complete one.
//!
//! In JS the ends are resources: `op_edged_body_open` makes a sink the dispatch
//! code writes a `ReadableStream` into (Rust picks the reading end up with
//! [`take_outgoing`]); a stream handed to the isolate is read with
//! `op_edged_body_read`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use deno_core::{
    op2, AsyncRefCell, CancelFuture, CancelHandle, JsBuffer, OpState, RcRef, Resource, ResourceId,
};
use deno_error::JsErrorBox;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Chunks buffered between writer and reader: with chunks of up to 1 MiB (the
/// HTTP layer joins what has arrived), a stream holds at most a few megabytes.
const CHANNEL_CHUNKS: usize = 4;

type Outcome = Arc<Mutex<Option<Result<(), String>>>>;

/// A body: bytes, or a stream.
#[derive(Debug, Clone)]
pub enum Body {
    Bytes(Bytes),
    Stream(StreamSlot),
}

impl Body {
    /// The bytes of a body held in memory (`None` for a stream).
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Body::Bytes(b) => Some(b),
            Body::Stream(_) => None,
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Bytes(b)
    }
}

/// A stream that can be handed over once. Cloning shares the slot, so a request
/// can be retried on another isolate as long as nobody has taken its body yet.
#[derive(Debug, Clone)]
pub struct StreamSlot(Arc<Mutex<Option<BodyStream>>>);

impl StreamSlot {
    pub fn new(stream: BodyStream) -> Self {
        StreamSlot(Arc::new(Mutex::new(Some(stream))))
    }

    pub fn take(&self) -> Option<BodyStream> {
        self.0.lock().take()
    }
}

/// The writing end of a body stream.
pub struct BodySink {
    tx: mpsc::Sender<Bytes>,
    outcome: Outcome,
}

/// The reading end of a body stream.
#[derive(Debug)]
pub struct BodyStream {
    rx: mpsc::Receiver<Bytes>,
    outcome: Outcome,
}

/// A new body stream.
pub fn body_channel() -> (BodySink, BodyStream) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let outcome = Outcome::default();
    (
        BodySink {
            tx,
            outcome: outcome.clone(),
        },
        BodyStream { rx, outcome },
    )
}

impl BodySink {
    /// Writes a chunk, waiting while the reader is behind. `false` when the
    /// reader has gone away (the client disconnected): stop writing.
    pub async fn send(&self, chunk: Bytes) -> bool {
        if chunk.is_empty() {
            return !self.tx.is_closed();
        }
        self.tx.send(chunk).await.is_ok()
    }

    /// The body is complete.
    pub fn finish(self) {
        *self.outcome.lock() = Some(Ok(()));
    }

    /// The body ends here with an error; the reader sees it after the chunks
    /// already written.
    pub fn fail(self, message: impl Into<String>) {
        *self.outcome.lock() = Some(Err(message.into()));
    }
}

/// Chunks of an incoming stream that have already arrived are joined up to this
/// size, so a worker reads fewer, larger chunks (each read is a JS turn that
/// counts against its CPU time).
pub const JOIN_UP_TO: usize = 1 << 20;

/// The next chunk of `stream`, joined with whatever else it already holds up to
/// [`JOIN_UP_TO`] bytes; never waits for more than the first chunk. `None` at
/// the end (the stream is fused, so polling past its end is safe).
pub async fn next_joined<S, E>(stream: &mut futures::stream::Fuse<S>) -> Option<Result<Bytes, E>>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
{
    use futures::{FutureExt, StreamExt};
    let first = match stream.next().await? {
        Ok(first) => first,
        Err(e) => return Some(Err(e)),
    };
    let mut joined: Option<bytes::BytesMut> = None;
    while joined.as_ref().map_or(first.len(), |j| j.len()) < JOIN_UP_TO {
        match stream.next().now_or_never() {
            Some(Some(Ok(more))) => joined
                .get_or_insert_with(|| bytes::BytesMut::from(&first[..]))
                .extend_from_slice(&more),
            Some(Some(Err(e))) => return Some(Err(e)),
            Some(None) | None => break,
        }
    }
    Some(Ok(joined.map_or(first, |j| j.freeze())))
}

impl BodyStream {
    /// The next chunk, `None` at a clean end, an error if the writer failed or
    /// vanished.
    pub async fn next(&mut self) -> Option<Result<Bytes, String>> {
        match self.rx.recv().await {
            Some(chunk) => Some(Ok(chunk)),
            None => match self.outcome.lock().take() {
                Some(Ok(())) => None,
                Some(Err(e)) => Some(Err(e)),
                None => Some(Err("the body stream was abandoned by its writer".into())),
            },
        }
    }

    /// Reads the whole body into memory, failing past `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, String> {
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            if buf.len() + chunk.len() > limit {
                return Err(format!("body exceeds {limit} bytes"));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

/// A body the isolate writes (a response body), as a resource.
struct SinkResource(RefCell<Option<Rc<BodySink>>>);

impl Resource for SinkResource {
    fn name(&self) -> std::borrow::Cow<'_, str> {
        "edgedBodySink".into()
    }
}

/// A body the isolate reads (a request body, a subrequest's response).
struct SourceResource {
    stream: AsyncRefCell<BodyStream>,
    cancel: CancelHandle,
}

impl Resource for SourceResource {
    fn name(&self) -> std::borrow::Cow<'_, str> {
        "edgedBodySource".into()
    }
    fn close(self: Rc<Self>) {
        self.cancel.cancel();
    }
}

/// Reading ends of sinks opened by JS, waiting for Rust to pick them up.
#[derive(Default)]
struct Outgoing(HashMap<ResourceId, BodyStream>);

/// Makes a stream readable from JS; returns its resource id.
pub fn add_source(state: &mut OpState, stream: BodyStream) -> ResourceId {
    state.resource_table.add(SourceResource {
        stream: AsyncRefCell::new(stream),
        cancel: CancelHandle::new(),
    })
}

/// A response body from another isolate (a service binding, a Durable Object)
/// as JS receives it: bytes, or a stream resource it reads as chunks arrive.
pub fn into_js(
    state: &RefCell<OpState>,
    body: Option<Body>,
) -> (Option<deno_core::ToJsBuffer>, Option<ResourceId>) {
    match body {
        None => (None, None),
        Some(Body::Bytes(b)) => (Some(deno_core::ToJsBuffer::from(b.to_vec())), None),
        Some(Body::Stream(slot)) => match slot.take() {
            Some(stream) => (None, Some(add_source(&mut state.borrow_mut(), stream))),
            None => (None, None),
        },
    }
}

/// The reading end of the sink `rid` that JS opened with `op_edged_body_open`.
pub fn take_outgoing(state: &mut OpState, rid: ResourceId) -> Option<BodyStream> {
    state.try_borrow_mut::<Outgoing>()?.0.remove(&rid)
}

/// Takes back a stream handed to JS with [`add_source`] that JS passed on
/// untouched.
pub fn take_source(state: &mut OpState, rid: ResourceId) -> Option<BodyStream> {
    let res = state.resource_table.take::<SourceResource>(rid).ok()?;
    let res = Rc::try_unwrap(res).ok()?;
    Some(res.stream.into_inner())
}

/// Reads a whole body JS received untouched, in Rust, up to `limit` bytes.
#[op2(async)]
#[buffer]
pub async fn op_edged_body_collect(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
    #[number] limit: usize,
) -> Result<Vec<u8>, JsErrorBox> {
    let stream = take_source(&mut state.borrow_mut(), rid)
        .ok_or_else(|| JsErrorBox::type_error("body stream is closed"))?;
    stream
        .collect(limit)
        .await
        .map(Vec::from)
        .map_err(|e| JsErrorBox::type_error(format!("the body stream failed: {e}")))
}

/// Opens a body the isolate will write; Rust reads it with [`take_outgoing`].
#[op2(fast)]
#[smi]
pub fn op_edged_body_open(state: &mut OpState) -> ResourceId {
    let (sink, stream) = body_channel();
    let rid = state
        .resource_table
        .add(SinkResource(RefCell::new(Some(Rc::new(sink)))));
    if !state.has::<Outgoing>() {
        state.put(Outgoing::default());
    }
    state.borrow_mut::<Outgoing>().0.insert(rid, stream);
    rid
}

/// Writes a chunk; resolves to `false` once the reader is gone.
#[op2(async)]
pub async fn op_edged_body_write(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
    #[buffer] chunk: JsBuffer,
) -> Result<bool, JsErrorBox> {
    let sink = {
        let state = state.borrow();
        let res = state
            .resource_table
            .get::<SinkResource>(rid)
            .map_err(|_| JsErrorBox::type_error("body stream is closed"))?;
        let sink = res.0.borrow().clone();
        sink.ok_or_else(|| JsErrorBox::type_error("body stream is closed"))?
    };
    Ok(sink.send(Bytes::copy_from_slice(&chunk)).await)
}

/// Ends a body the isolate wrote: cleanly when `error` is empty.
#[op2(fast)]
pub fn op_edged_body_close(state: &mut OpState, #[smi] rid: ResourceId, #[string] error: &str) {
    let Ok(res) = state.resource_table.take::<SinkResource>(rid) else {
        return;
    };
    // The reading end stays in `Outgoing` until Rust takes it: a short body may
    // be written completely before the dispatch result is read.
    let Some(sink) = res.0.borrow_mut().take() else {
        return;
    };
    // A write still in flight holds the other reference; it ends on its own.
    if let Ok(sink) = Rc::try_unwrap(sink) {
        if error.is_empty() {
            sink.finish();
        } else {
            sink.fail(error);
        }
    }
}

/// The next chunk of a body the isolate reads; an empty buffer at the end.
#[op2(async)]
#[buffer]
pub async fn op_edged_body_read(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
) -> Result<Vec<u8>, JsErrorBox> {
    let res = state
        .borrow()
        .resource_table
        .get::<SourceResource>(rid)
        .map_err(|_| JsErrorBox::type_error("body stream is closed"))?;
    let cancel = RcRef::map(&res, |r| &r.cancel);
    let mut stream = RcRef::map(&res, |r| &r.stream).borrow_mut().await;
    let next = stream.next().or_cancel(cancel).await;
    match next {
        Err(_) => Err(JsErrorBox::type_error("body stream was cancelled")),
        Ok(None) => {
            drop(stream);
            let _ = state
                .borrow_mut()
                .resource_table
                .take::<SourceResource>(rid);
            Ok(Vec::new())
        }
        // Moved, not copied, when the chunk's buffer is not shared.
        Ok(Some(Ok(chunk))) => Ok(Vec::from(chunk)),
        Ok(Some(Err(e))) => Err(JsErrorBox::type_error(format!(
            "the body stream failed: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn chunks_that_have_arrived_are_joined_and_the_end_is_kept() {
        let chunks = (0..5).map(|i| Ok::<_, String>(Bytes::from(vec![i as u8; 1000])));
        let mut s = futures::stream::iter(chunks).fuse();
        let joined = next_joined(&mut s).await.expect("a chunk").expect("ok");
        assert_eq!(joined.len(), 5000);
        assert_eq!(&joined[999..1001], &[0, 1]);
        assert!(next_joined(&mut s).await.is_none());
        assert!(next_joined(&mut s).await.is_none(), "fused past its end");
    }

    #[tokio::test]
    async fn a_join_stops_at_its_bound_and_at_an_error() {
        let big = Bytes::from(vec![1u8; JOIN_UP_TO]);
        let items = vec![Ok(big.clone()), Ok(Bytes::from_static(b"x"))];
        let mut s = futures::stream::iter(items).fuse();
        assert_eq!(
            next_joined::<_, String>(&mut s)
                .await
                .unwrap()
                .unwrap()
                .len(),
            JOIN_UP_TO
        );
        assert_eq!(
            next_joined::<_, String>(&mut s)
                .await
                .unwrap()
                .unwrap()
                .len(),
            1
        );

        let items = vec![Ok(Bytes::from_static(b"ab")), Err("cut".to_owned())];
        let mut s = futures::stream::iter(items).fuse();
        assert_eq!(next_joined(&mut s).await.unwrap(), Err("cut".to_owned()));
    }
}
