// edged runtime: bodies that live in Rust (src/js/body.rs) as JS streams.
//
// A body Rust streams in (resource `rid`) becomes a byte ReadableStream that
// pulls one chunk at a time, so the HTTP layer reads the client no faster than
// the worker. While nobody has read from such a stream, code that only passes
// it on (a Response body, a KV value) can hand the resource back to Rust
// (takeStreamRid) and skip the per-chunk trip through JS.

import { core } from "ext:core/mod.js";
import { op_edged_body_collect, op_edged_body_read } from "ext:core/ops";
import {
  isReadableStreamDisturbed,
  ReadableStream,
  readableStreamDisturb,
} from "ext:deno_web/06_streams.js";
import { InnerBody } from "ext:deno_fetch/22_body.js";

const backing = new WeakMap();
// A body stream dropped unread would keep its resource (and the chunks the
// client already sent) in the isolate forever: close it when the stream is
// collected.
const unread = new FinalizationRegistry((rid) => core.tryClose(rid));

export function readableFromRid(rid) {
  const stream = new ReadableStream({
    type: "bytes",
    async pull(controller) {
      const chunk = await op_edged_body_read(rid);
      if (chunk.byteLength === 0) {
        controller.close();
        controller.byobRequest?.respond(0);
      } else {
        controller.enqueue(chunk);
      }
    },
    cancel() {
      core.tryClose(rid);
    },
  }, { highWaterMark: 0 });
  backing.set(stream, rid);
  unread.register(stream, rid, stream);
  return stream;
}

// After the response: a request body nobody started to read is closed now
// (the client's upload stops being buffered), unless waitUntil() work might
// still read it.
export function releaseUnread(stream) {
  if (!backing.has(stream) || stream.locked || isReadableStreamDisturbed(stream)) return;
  const rid = backing.get(stream);
  backing.delete(stream);
  unread.unregister(stream);
  core.tryClose(rid);
}

// The resource behind `stream` if it is still untouched; the stream is then
// locked (used up) and the caller owns the resource.
export function takeStreamRid(stream) {
  const rid = backing.get(stream);
  if (rid === undefined || stream.locked || isReadableStreamDisturbed(stream)) return null;
  backing.delete(stream);
  unread.unregister(stream);
  stream.getReader();
  readableStreamDisturb(stream);
  return rid;
}

// The inner body of a request whose body Rust streams in. Reading it whole
// (text(), json(), arrayBuffer(), formData()) collects it in Rust: one op
// instead of one trip through JS per chunk.
export function streamedInnerBody(rid) {
  const stream = readableFromRid(rid);
  const inner = new InnerBody(stream);
  const consume = inner.consume;
  inner.consume = function () {
    if (this.streamOrStatic === stream) {
      const taken = takeStreamRid(stream);
      if (taken !== null) return op_edged_body_collect(taken, Number.MAX_SAFE_INTEGER);
    }
    return consume.call(this);
  };
  return inner;
}
