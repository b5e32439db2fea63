// edged runtime: Workers' WebSocket API -- WebSocketPair, WebSocket (accept,
// send, close, events) and `new Response(null, { status: 101, webSocket })`.
//
// A WebSocket is an end of a socket held in Rust (src/js/websocket.rs): this
// file keeps only its id and the state the API shows. An accepted end is read
// by a loop over op_ws_recv that runs for the request that accepted it; the
// request stays live (counted like a streamed response) until the socket has
// closed both ways, so its handlers may still do I/O. An end returned in a
// Response leaves the isolate with it ("coupled": src/js/worker.rs takes it
// from the table); an end from a service binding or a Durable Object comes in
// through fromRid().

import { primordials } from "ext:core/mod.js";
import {
  op_do_ws_accept,
  op_do_ws_attachment,
  op_do_ws_close,
  op_do_ws_send_binary,
  op_do_ws_send_text,
  op_do_ws_set_attachment,
  op_edged_response_stream,
  op_ws_accept,
  op_ws_close,
  op_ws_connect,
  op_ws_message,
  op_ws_pair,
  op_ws_recv,
  op_ws_release,
  op_ws_send_binary,
  op_ws_send_text,
} from "ext:core/ops";
import { core } from "ext:core/mod.js";
import {
  CloseEvent,
  defineEventHandler,
  ErrorEvent,
  Event,
  EventTarget,
  MessageEvent,
  setIsTrusted,
} from "ext:deno_web/02_event.js";
import * as response from "ext:deno_fetch/23_response.js";
import { DOMException } from "ext:deno_web/01_dom_exception.js";
import { URL } from "ext:deno_url/00_url.js";

const {
  ArrayBufferIsView,
  ArrayBufferPrototype,
  ArrayBufferPrototypeSlice,
  ArrayPrototypeJoin,
  ArrayPrototypePush,
  DataViewPrototypeGetBuffer,
  DataViewPrototypeGetByteLength,
  DataViewPrototypeGetByteOffset,
  Error,
  PromisePrototypeThen,
  RangeError,
  ObjectDefineProperty,
  ObjectPrototypeIsPrototypeOf,
  ObjectSetPrototypeOf,
  ReflectConstruct,
  SafeWeakMap,
  SafeWeakSet,
  String,
  Symbol,
  TypeError,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetByteOffset,
  TypedArrayPrototypeGetSymbolToStringTag,
  Uint8Array,
  WeakMapPrototypeGet,
  WeakMapPrototypeSet,
  WeakSetPrototypeAdd,
  WeakSetPrototypeHas,
} = primordials;

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

// Lifecycle of an end in this isolate.
const PENDING = 0; // may be accepted or returned in a Response
const ACCEPTED = 1;
const RELEASED = 2; // left with a Response, or gone
const HIBERNATABLE = 3; // held by the runtime for its Durable Object (ctx.acceptWebSocket)
const CONNECTING_OUT = 4; // new WebSocket(url): the handshake is under way

// The output gate for sends (set in Durable Object hosts): returns a promise
// while writes made so far are not durable, else undefined.
let sendGate = null;
function setSendGate(gate) {
  sendGate = gate;
}

const internal = Symbol("WebSocket internal");

function bytesToSend(data) {
  if (ObjectPrototypeIsPrototypeOf(ArrayBufferPrototype, data)) return new Uint8Array(data);
  if (ArrayBufferIsView(data)) {
    if (TypedArrayPrototypeGetSymbolToStringTag(data) !== undefined) {
      return new Uint8Array(
        TypedArrayPrototypeGetBuffer(data),
        TypedArrayPrototypeGetByteOffset(data),
        TypedArrayPrototypeGetByteLength(data),
      );
    }
    return new Uint8Array(
      DataViewPrototypeGetBuffer(data),
      DataViewPrototypeGetByteOffset(data),
      DataViewPrototypeGetByteLength(data),
    );
  }
  return null;
}

function trusted(event) {
  setIsTrusted(event, true);
  return event;
}

class WebSocket extends EventTarget {
  #rid;
  #state = PENDING;
  #closedOutgoing = false;
  #closedIncoming = false;
  #url = null;
  #protocol = null;
  #attachment = undefined;
  #hid = 0;
  // Sends waiting for the output gate, in order.
  #sendChain = null;

  static CONNECTING = CONNECTING;
  static OPEN = OPEN;
  static CLOSING = CLOSING;
  static CLOSED = CLOSED;
  static READY_STATE_CONNECTING = CONNECTING;
  static READY_STATE_OPEN = OPEN;
  static READY_STATE_CLOSING = CLOSING;
  static READY_STATE_CLOSED = CLOSED;

  constructor(token, rid = undefined) {
    super();
    if (token !== internal) {
      this.#open(token, rid);
      return;
    }
    this.#rid = rid;
  }

  // new WebSocket(url, protocols?): connects, then behaves as an accepted end.
  #open(url, protocols) {
    let parsed;
    try {
      parsed = new URL(String(url));
    } catch {
      throw new DOMException(`Failed to construct 'WebSocket': The URL '${url}' is invalid.`, "SyntaxError");
    }
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:" && parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new DOMException(
        `Failed to construct 'WebSocket': The URL's scheme must be either 'http', 'https', 'ws', or 'wss'. '${parsed.protocol.slice(0, -1)}' is not allowed.`,
        "SyntaxError",
      );
    }
    if (parsed.hash !== "") {
      throw new DOMException("Failed to construct 'WebSocket': The URL contains a fragment identifier.", "SyntaxError");
    }
    this.#url = parsed.href;
    this.#state = CONNECTING_OUT;
    const headers = [];
    if (protocols !== undefined) {
      const list = typeof protocols === "string" ? [protocols] : [...protocols];
      if (list.length > 0) ArrayPrototypePush(headers, "sec-websocket-protocol", ArrayPrototypeJoin(list, ", "));
    }
    // The request that made the socket lives while it is open.
    op_edged_response_stream(false);
    PromisePrototypeThen(op_ws_connect(parsed.href, headers), (got) => {
      if (got[3] === null) {
        this.#failed(`WebSocket handshake failed: the server answered ${got[0]}`);
        return;
      }
      for (let i = 0; i + 1 < got[1].length; i += 2) {
        if (got[1][i] === "sec-websocket-protocol") this.#protocol = got[1][i + 1];
      }
      this.#rid = got[3];
      this.#state = ACCEPTED;
      op_ws_accept(this.#rid);
      this.dispatchEvent(trusted(new Event("open")));
      this.#readLoop();
    }, (e) => this.#failed(String(e?.message ?? e)));
  }

  #failed(message) {
    this.#state = RELEASED;
    this.#closedIncoming = true;
    this.#closedOutgoing = true;
    this.dispatchEvent(trusted(new ErrorEvent("error", { message })));
    this.dispatchEvent(trusted(new CloseEvent("close", { code: 1006, reason: message, wasClean: false })));
    op_edged_response_stream(true);
  }

  get readyState() {
    if (this.#state === CONNECTING_OUT) return CONNECTING;
    if (this.#state === RELEASED && !this.#closedIncoming) return CLOSED;
    if (this.#closedIncoming && this.#closedOutgoing) return CLOSED;
    if (this.#closedIncoming || this.#closedOutgoing) return CLOSING;
    return OPEN;
  }
  get url() {
    return this.#url;
  }
  get protocol() {
    return this.#protocol;
  }
  get extensions() {
    return null;
  }
  get binaryType() {
    return "arraybuffer";
  }
  set binaryType(value) {
    if (value !== "arraybuffer") {
      throw new TypeError("WebSocket binaryType must be 'arraybuffer'.");
    }
  }

  accept() {
    if (this.#state === CONNECTING_OUT) return;
    if (this.#state === RELEASED) {
      throw new TypeError("Can't accept() WebSocket that was already used in a response.");
    }
    if (this.#state === ACCEPTED) return;
    this.#state = ACCEPTED;
    op_ws_accept(this.#rid);
    // The request that accepted the socket lives as long as the socket does.
    op_edged_response_stream(false);
    this.#readLoop();
  }

  async #readLoop() {
    const rid = this.#rid;
    try {
      while (!this.#closedIncoming) {
        const got = await op_ws_recv(rid);
        const kind = got[0];
        op_ws_message(rid);
        if (kind === 0) {
          this.dispatchEvent(trusted(new MessageEvent("message", { data: got[1] })));
        } else if (kind === 1) {
          const bytes = got[2];
          const data = bytes.byteLength === bytes.buffer.byteLength
            ? bytes.buffer
            : ArrayBufferPrototypeSlice(bytes.buffer, bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
          this.dispatchEvent(trusted(new MessageEvent("message", { data })));
        } else if (kind === 2) {
          this.#closedIncoming = true;
          const code = got[3];
          const reason = got[1] ?? "";
          this.dispatchEvent(trusted(new CloseEvent("close", { code, reason, wasClean: true })));
          // The close handshake: answered at once when the handler did not
          // close itself (Workers' web_socket_auto_reply_to_close).
          if (!this.#closedOutgoing) {
            this.#closedOutgoing = true;
            op_ws_close(rid, code === 1005 || code === 1006 ? 1005 : code, code === 1005 ? "" : reason);
          }
        } else {
          this.#closedIncoming = true;
          this.#closedOutgoing = true;
          this.dispatchEvent(trusted(new CloseEvent("close", {
            code: 1006,
            reason: "WebSocket disconnected without sending Close frame.",
            wasClean: false,
          })));
        }
      }
    } catch (e) {
      this.#closedIncoming = true;
      this.#closedOutgoing = true;
      this.dispatchEvent(trusted(new ErrorEvent("error", { error: e, message: String(e?.message ?? e) })));
    } finally {
      this.#state = RELEASED;
      op_ws_release(rid);
      op_edged_response_stream(true);
    }
  }

  send(message) {
    if (this.#closedOutgoing) {
      throw new TypeError("Can't call WebSocket send() after close().");
    }
    if (this.#state === RELEASED) return;
    if (this.#state === CONNECTING_OUT) {
      throw new DOMException("Failed to execute 'send' on 'WebSocket': Still in CONNECTING state.", "InvalidStateError");
    }
    if (this.#state !== ACCEPTED && this.#state !== HIBERNATABLE) {
      throw new TypeError(
        "You must call one of accept() or state.acceptWebSocket() on this WebSocket before sending messages.",
      );
    }
    const bytes = bytesToSend(message);
    const text = bytes === null ? String(message) : null;
    if (this.#state === HIBERNATABLE) {
      const hid = this.#hid;
      this.#gated(() => bytes !== null ? op_do_ws_send_binary(hid, bytes) : op_do_ws_send_text(hid, text));
    } else {
      const rid = this.#rid;
      this.#gated(() => bytes !== null ? op_ws_send_binary(rid, bytes) : op_ws_send_text(rid, text));
    }
  }

  // Runs `send` now, or once the object's writes so far are durable (the
  // output gate), after the sends already waiting.
  #gated(send) {
    if (this.#sendChain === null) {
      const wait = sendGate === null ? undefined : sendGate();
      if (wait === undefined) {
        send();
        return;
      }
      this.#sendChain = wait;
    }
    const chain = PromisePrototypeThen(this.#sendChain, () => {
      try {
        send();
      } catch {
        // Too big or too much buffered: dropped, as the gate made it late.
      }
    }, () => {
      // The writes failed: nothing after them is sent.
    });
    this.#sendChain = chain;
    PromisePrototypeThen(chain, () => {
      if (this.#sendChain === chain) this.#sendChain = null;
    });
  }

  close(code = undefined, reason = undefined) {
    if (this.#closedOutgoing || this.#state === RELEASED) return;
    if (this.#state !== ACCEPTED && this.#state !== HIBERNATABLE) {
      throw new TypeError(
        "You must call one of accept() or state.acceptWebSocket() on this WebSocket before sending messages.",
      );
    }
    if (code !== undefined) {
      code = code | 0;
      if (code < 1000 || code >= 5000 || code === 1004 || code === 1005 || code === 1006 || code === 1015) {
        throw new TypeError(`Invalid WebSocket close code: ${code}.`);
      }
    }
    if (reason !== undefined && code === undefined) {
      throw new TypeError("If you specify a WebSocket close reason, you must also specify a code.");
    }
    reason = reason === undefined ? "" : String(reason);
    if (reason.length > 123 || core.encode(reason).byteLength > 123) {
      throw new TypeError("WebSocket close reason is too long (it must be at most 123 bytes).");
    }
    this.#closedOutgoing = true;
    if (this.#state === HIBERNATABLE) {
      const hid = this.#hid;
      this.#gated(() => op_do_ws_close(hid, code ?? 1005, reason));
    } else {
      const rid = this.#rid;
      this.#gated(() => op_ws_close(rid, code ?? 1005, reason));
    }
  }

  serializeAttachment(value) {
    const bytes = core.serialize(value, { forStorage: true });
    if (bytes.byteLength > MAX_ATTACHMENT) {
      throw new Error(
        `A WebSocket 'attachment' cannot be larger than ${MAX_ATTACHMENT} bytes.'attachment' was ${bytes.byteLength} bytes.`,
      );
    }
    // A hibernatable socket's attachment is kept by the runtime, so it
    // survives the object's hibernation.
    if (this.#state === HIBERNATABLE) op_do_ws_set_attachment(this.#hid, bytes);
    else this.#attachment = bytes;
  }

  deserializeAttachment() {
    const bytes = this.#state === HIBERNATABLE ? op_do_ws_attachment(this.#hid) : this.#attachment;
    if (bytes === undefined || bytes === null) return null;
    return core.deserialize(bytes, { forStorage: true });
  }

  // For the runtime: ctx.acceptWebSocket(ws, tags) hands the end to the
  // object's hibernatable set; returns its id there.
  static hibernate(ws, tags) {
    if (ws.#state === ACCEPTED) {
      throw new Error("Cannot call `acceptWebSocket()` if the WebSocket was already accepted via `accept()`");
    }
    if (ws.#state !== PENDING) {
      throw new Error(
        "Cannot call `acceptWebSocket()` on this WebSocket because its pair has already been accepted or used in a Response.",
      );
    }
    const hid = op_do_ws_accept(ws.#rid, tags);
    ws.#state = HIBERNATABLE;
    ws.#hid = hid;
    return hid;
  }

  // A hibernatable socket as a reconstructed object sees it.
  static fromHibernatable(hid, closedOut) {
    const ws = new WebSocket(internal, 0);
    ws.#state = HIBERNATABLE;
    ws.#hid = hid;
    ws.#closedOutgoing = closedOut;
    return ws;
  }

  // The id of a hibernatable socket, or null.
  static hidOf(ws) {
    if (ws === null || typeof ws !== "object" || !(#rid in ws)) {
      throw new TypeError("Failed to execute: parameter 1 is not of type 'WebSocket'.");
    }
    return ws.#state === HIBERNATABLE ? ws.#hid : null;
  }

  // The client's close (or disappearance) reached a hibernatable socket.
  static closedIncoming(ws) {
    ws.#closedIncoming = true;
    // The runtime answered the close handshake.
    ws.#closedOutgoing = true;
  }

  // For the runtime: the end's id, taken out of the isolate with a Response.
  static couple(ws) {
    if (ws.#state === ACCEPTED) {
      throw new TypeError("Can't return WebSocket in a Response after calling accept().");
    }
    if (ws.#state === RELEASED) {
      throw new TypeError("Can't return WebSocket that was already used in a response.");
    }
    ws.#state = RELEASED;
    return ws.#rid;
  }

  static isWebSocket(value) {
    return value !== null && typeof value === "object" && #rid in value;
  }
}
const MAX_ATTACHMENT = 2048;

for (const name of ["open", "message", "close", "error"]) {
  defineEventHandler(WebSocket.prototype, name);
}
const couple = WebSocket.couple;
const isWebSocket = WebSocket.isWebSocket;
const hibernate = WebSocket.hibernate;
const fromHibernatable = WebSocket.fromHibernatable;
const hidOf = WebSocket.hidOf;
const closedIncoming = WebSocket.closedIncoming;
for (const name of ["couple", "isWebSocket", "hibernate", "fromHibernatable", "hidOf", "closedIncoming"]) {
  delete WebSocket[name];
}

// ctx.setWebSocketAutoResponse()'s pair: a message equal to `request` is
// answered with `response` by the runtime, without waking the object.
class WebSocketRequestResponsePair {
  #request;
  #response;
  constructor(request, response) {
    if (request === undefined || response === undefined) {
      throw new TypeError("Failed to construct 'WebSocketRequestResponsePair': 2 arguments required.");
    }
    this.#request = String(request);
    this.#response = String(response);
  }
  get request() {
    return this.#request;
  }
  get response() {
    return this.#response;
  }
}

class WebSocketPair {
  constructor() {
    const ids = op_ws_pair();
    ObjectDefineProperty(this, 0, { value: new WebSocket(internal, ids[0]), enumerable: true });
    ObjectDefineProperty(this, 1, { value: new WebSocket(internal, ids[1]), enumerable: true });
  }
}

/// An end that arrived from another isolate (a 101 from a binding).
function fromRid(rid) {
  return new WebSocket(internal, rid);
}

// Response: as deno's, plus `webSocket` (a 101 response's socket end).
const DenoResponse = response.Response;
const sockets = new SafeWeakMap();
// Responses made with `encodeBody: "manual"`: their body is already encoded
// as their Content-Encoding says, and the runtime sends it as it is.
// Otherwise a gzip or br Content-Encoding is applied by the runtime
// (src/http/encoding.rs), as Workers does.
const manualEncoding = new SafeWeakSet();
function Response(body = null, init = undefined) {
  if (new.target === undefined) {
    throw new TypeError("Failed to construct 'Response': Please use the 'new' operator, this DOM object constructor cannot be called as a function.");
  }
  let socket = null;
  if (init !== null && typeof init === "object" && init.webSocket !== undefined && init.webSocket !== null) {
    socket = init.webSocket;
    if (!isWebSocket(socket)) {
      throw new TypeError("Failed to construct 'Response': Failed to read the 'webSocket' property from 'ResponseInit': parameter is not of type 'WebSocket'.");
    }
    if (init.status !== 101) {
      throw new RangeError("Responses with a WebSocket must have status code 101.");
    }
  } else if (init !== null && typeof init === "object" && init.status === 101) {
    throw new RangeError("Responses may only be constructed with status codes in the range 200 to 599, inclusive.");
  }
  let manual = false;
  if (init !== null && typeof init === "object" && init.encodeBody !== undefined) {
    const mode = String(init.encodeBody);
    if (mode !== "automatic" && mode !== "manual") {
      throw new TypeError(`Failed to construct 'Response': encodeBody: unknown value "${mode}" (expected "automatic" or "manual").`);
    }
    manual = mode === "manual";
  }
  const made = ReflectConstruct(DenoResponse, [body, init], new.target);
  if (socket !== null) WeakMapPrototypeSet(sockets, made, socket);
  if (manual) WeakSetPrototypeAdd(manualEncoding, made);
  return made;
}
ObjectSetPrototypeOf(Response, DenoResponse);
Response.prototype = DenoResponse.prototype;
ObjectDefineProperty(DenoResponse.prototype, "constructor", {
  value: Response,
  writable: true,
  enumerable: false,
  configurable: true,
});
ObjectDefineProperty(DenoResponse.prototype, "encodeBody", {
  get() {
    return WeakSetPrototypeHas(manualEncoding, this) ? "manual" : "automatic";
  },
  enumerable: true,
  configurable: true,
});
/// Whether the runtime must send this response's body as it is.
function encodesManually(resp) {
  return WeakSetPrototypeHas(manualEncoding, resp);
}
ObjectDefineProperty(DenoResponse.prototype, "webSocket", {
  get() {
    return WeakMapPrototypeGet(sockets, this) ?? null;
  },
  enumerable: true,
  configurable: true,
});

/// fetch() with `Upgrade: websocket`: a 101 whose `webSocket` the worker
/// accepts, or the server's plain answer.
async function connect(url, flatHeaders) {
  const got = await op_ws_connect(url, flatHeaders);
  const pairs = [];
  for (let i = 0; i + 1 < got[1].length; i += 2) ArrayPrototypePush(pairs, [got[1][i], got[1][i + 1]]);
  if (got[3] !== null) return socketResponse(pairs, got[3]);
  const status = got[0];
  const nullBody = status === 204 || status === 205 || status === 304;
  return ReflectConstruct(DenoResponse, [nullBody ? null : got[2], { status, headers: pairs }], Response);
}

/// A 101 response for a socket end that arrived from another isolate.
function socketResponse(headers, rid) {
  const made = ReflectConstruct(DenoResponse, [null, { status: 101, headers }], Response);
  WeakMapPrototypeSet(sockets, made, fromRid(rid));
  return made;
}

/// The id of the socket end a Response carries (taken out of the isolate), or
/// null.
function takeResponseSocket(resp) {
  const ws = WeakMapPrototypeGet(sockets, resp);
  if (ws === undefined) return null;
  return couple(ws);
}

export {
  closedIncoming,
  connect,
  encodesManually,
  fromHibernatable,
  fromRid,
  hibernate,
  hidOf,
  Response,
  setSendGate,
  socketResponse,
  takeResponseSocket,
  WebSocket,
  WebSocketPair,
  WebSocketRequestResponsePair,
};
