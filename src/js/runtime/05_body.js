// edged runtime: bodies that live in Rust (src/js/body.rs) as JS streams.
//
// A body Rust streams in (resource `rid`) becomes a byte ReadableStream that
// pulls one chunk at a time, so the HTTP layer reads the client no faster than
// the worker. While nobody has read from such a stream, code that only passes
// it on (a Response body, a KV value) can hand the resource back to Rust
// (takeStreamRid) and skip the per-chunk trip through JS.

import { core, primordials } from "ext:core/mod.js";
import { op_edged_body_collect, op_edged_body_read } from "ext:core/ops";
import {
  isReadableStreamDisturbed,
  ReadableStream,
  ReadableStreamDefaultReader,
  readableStreamDisturb,
} from "ext:deno_web/06_streams.js";
import { InnerBody } from "ext:deno_fetch/22_body.js";

const {
  ArrayBufferIsView,
  DataViewPrototypeGetBuffer,
  DataViewPrototypeGetByteLength,
  DataViewPrototypeGetByteOffset,
  FunctionPrototypeCall,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteOffset,
  TypedArrayPrototypeGetSymbolToStringTag,
  Uint8Array,
  NumberMAX_SAFE_INTEGER,
  SafeFinalizationRegistry,
  SafeWeakMap,
  TypedArrayPrototypeGetByteLength,
  uncurryThis,
  WeakMapPrototypeDelete,
  WeakMapPrototypeGet,
  WeakMapPrototypeHas,
  WeakMapPrototypeSet,
} = primordials;

// The bytes of an ArrayBuffer or ArrayBufferView (a view over the same memory),
// or null for anything else. Reads no property a tenant could redefine.
export function bytesOf(value) {
  if (ArrayBufferIsView(value)) {
    if (TypedArrayPrototypeGetSymbolToStringTag(value) !== undefined) {
      if (TypedArrayPrototypeGetSymbolToStringTag(value) === "Uint8Array") return value;
      return new Uint8Array(
        TypedArrayPrototypeGetBuffer(value),
        TypedArrayPrototypeGetByteOffset(value),
        TypedArrayPrototypeGetByteLength(value),
      );
    }
    return new Uint8Array(
      DataViewPrototypeGetBuffer(value),
      DataViewPrototypeGetByteOffset(value),
      DataViewPrototypeGetByteLength(value),
    );
  }
  if (core.isArrayBuffer(value) || core.isSharedArrayBuffer(value)) {
    return new Uint8Array(value);
  }
  return null;
}

// Reader methods as they were before tenant code could patch them.
export const readerRead = uncurryThis(ReadableStreamDefaultReader.prototype.read);
export const readerCancel = uncurryThis(ReadableStreamDefaultReader.prototype.cancel);
export const readerReleaseLock = uncurryThis(ReadableStreamDefaultReader.prototype.releaseLock);
const streamLocked = uncurryThis(
  primordials.ObjectGetOwnPropertyDescriptor(ReadableStream.prototype, "locked").get,
);
export function isLocked(stream) {
  return streamLocked(stream);
}
export function getReader(stream) {
  return new ReadableStreamDefaultReader(stream);
}

const backing = new SafeWeakMap();
// A body stream dropped unread would keep its resource (and the chunks the
// client already sent) in the isolate forever: close it when the stream is
// collected.
const unread = new SafeFinalizationRegistry((rid) => core.tryClose(rid));

export function readableFromRid(rid) {
  const stream = new ReadableStream({
    type: "bytes",
    async pull(controller) {
      const chunk = await op_edged_body_read(rid);
      if (TypedArrayPrototypeGetByteLength(chunk) === 0) {
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
  WeakMapPrototypeSet(backing, stream, rid);
  unread.register(stream, rid, stream);
  return stream;
}

// After the response: a request body nobody started to read is closed now
// (the client's upload stops being buffered), unless waitUntil() work might
// still read it.
export function releaseUnread(stream) {
  if (!WeakMapPrototypeHas(backing, stream) || streamLocked(stream) || isReadableStreamDisturbed(stream)) {
    return;
  }
  const rid = WeakMapPrototypeGet(backing, stream);
  WeakMapPrototypeDelete(backing, stream);
  unread.unregister(stream);
  core.tryClose(rid);
}

// The resource behind `stream` if it is still untouched; the stream is then
// locked (used up) and the caller owns the resource.
export function takeStreamRid(stream) {
  const rid = WeakMapPrototypeGet(backing, stream);
  if (rid === undefined || streamLocked(stream) || isReadableStreamDisturbed(stream)) return null;
  WeakMapPrototypeDelete(backing, stream);
  unread.unregister(stream);
  getReader(stream);
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
      if (taken !== null) return op_edged_body_collect(taken, NumberMAX_SAFE_INTEGER);
    }
    return FunctionPrototypeCall(consume, this);
  };
  return inner;
}
