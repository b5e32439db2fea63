// node:http — the server side Workers has: createServer() and the
// IncomingMessage/ServerResponse a request handler sees, served through
// `httpServerHandler` of `cloudflare:node`, which turns a Workers fetch event
// into a Node request and the response into a Workers Response. There is no
// socket: `listen(port)` only registers the server under its port for
// `httpServerHandler({ port })`. The client side (`request`, `get`) is not
// there and throws.
import { Readable, Writable } from "./stream.js";
import { EventEmitter } from "./events.js";
import { Buffer } from "./buffer.js";

export const STATUS_CODES = {
  100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
  200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
  204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
  208: "Already Reported", 226: "IM Used", 300: "Multiple Choices", 301: "Moved Permanently",
  302: "Found", 303: "See Other", 304: "Not Modified", 305: "Use Proxy", 307: "Temporary Redirect",
  308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
  403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
  407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
  411: "Length Required", 412: "Precondition Failed", 413: "Payload Too Large", 414: "URI Too Long",
  415: "Unsupported Media Type", 416: "Range Not Satisfiable", 417: "Expectation Failed",
  418: "I'm a Teapot", 421: "Misdirected Request", 422: "Unprocessable Entity", 423: "Locked",
  424: "Failed Dependency", 425: "Too Early", 426: "Upgrade Required", 428: "Precondition Required",
  429: "Too Many Requests", 431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
  500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
  504: "Gateway Timeout", 505: "HTTP Version Not Supported", 506: "Variant Also Negotiates",
  507: "Insufficient Storage", 508: "Loop Detected", 509: "Bandwidth Limit Exceeded",
  510: "Not Extended", 511: "Network Authentication Required",
};

export const METHODS = [
  "ACL", "BIND", "CHECKOUT", "CONNECT", "COPY", "DELETE", "GET", "HEAD", "LINK", "LOCK",
  "M-SEARCH", "MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL", "MOVE", "NOTIFY", "OPTIONS", "PATCH",
  "POST", "PROPFIND", "PROPPATCH", "PURGE", "PUT", "QUERY", "REBIND", "REPORT", "SEARCH", "SOURCE",
  "SUBSCRIBE", "TRACE", "UNBIND", "UNLINK", "UNLOCK", "UNSUBSCRIBE",
];

const NULL_BODY = new Set([101, 204, 205, 304]);

export class IncomingMessage extends Readable {
  #reader;
  constructor(request) {
    super();
    const url = new URL(request.url);
    this.method = request.method;
    this.url = url.pathname + url.search;
    this.httpVersion = "1.1";
    this.httpVersionMajor = 1;
    this.httpVersionMinor = 1;
    this.headers = {};
    this.rawHeaders = [];
    for (const [name, value] of request.headers) {
      this.rawHeaders.push(name, value);
      this.headers[name] = name in this.headers ? `${this.headers[name]}, ${value}` : value;
    }
    this.trailers = {};
    this.rawTrailers = [];
    this.complete = false;
    this.aborted = false;
    this.socket = this.connection = {
      remoteAddress: request.headers.get("cf-connecting-ip") ?? "127.0.0.1",
      remotePort: 0,
      encrypted: url.protocol === "https:",
      setTimeout() {},
      destroy() {},
    };
    this.#reader = request.body?.getReader() ?? null;
  }

  _read() {
    if (this.#reader === null) {
      this.complete = true;
      this.push(null);
      return;
    }
    this.#reader.read().then(
      ({ done, value }) => {
        if (done) {
          this.complete = true;
          this.push(null);
        } else {
          this.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
        }
      },
      (e) => this.destroy(e),
    );
  }

  setTimeout(_ms, callback) {
    if (callback) this.once("timeout", callback);
    return this;
  }
}

function headerValue(value) {
  return Array.isArray(value) ? value.map(String) : String(value);
}

export class ServerResponse extends Writable {
  #headers = new Map();
  #controller = null;
  #respond;
  #head;
  statusCode = 200;
  statusMessage = "";
  headersSent = false;
  sendDate = true;
  finished = false;

  constructor(req, respond) {
    super();
    this.req = req;
    this.#respond = respond;
    this.#head = req.method === "HEAD";
    this.socket = this.connection = req.socket;
    this.on("finish", () => {
      this.finished = true;
    });
  }

  setHeader(name, value) {
    if (this.headersSent) throw new Error("Cannot set headers after they are sent to the client");
    this.#headers.set(String(name).toLowerCase(), [String(name), headerValue(value)]);
    return this;
  }
  appendHeader(name, value) {
    const key = String(name).toLowerCase();
    const old = this.#headers.get(key)?.[1];
    const add = headerValue(value);
    const next = old === undefined ? add : [].concat(old, add);
    this.#headers.set(key, [String(name), next]);
    return this;
  }
  getHeader(name) {
    return this.#headers.get(String(name).toLowerCase())?.[1];
  }
  getHeaders() {
    const out = { __proto__: null };
    for (const [key, [, value]] of this.#headers) out[key] = value;
    return out;
  }
  getHeaderNames() {
    return [...this.#headers.keys()];
  }
  hasHeader(name) {
    return this.#headers.has(String(name).toLowerCase());
  }
  removeHeader(name) {
    if (this.headersSent) throw new Error("Cannot remove headers after they are sent to the client");
    this.#headers.delete(String(name).toLowerCase());
  }

  writeHead(statusCode, statusMessage, headers) {
    if (this.headersSent) throw new Error("Cannot write headers after they are sent to the client");
    if (typeof statusMessage !== "string") [statusMessage, headers] = [undefined, statusMessage];
    const code = Number(statusCode);
    if (!Number.isInteger(code) || code < 100 || code > 999) {
      throw new RangeError(`Invalid status code: ${statusCode}`);
    }
    this.statusCode = code;
    if (statusMessage !== undefined) this.statusMessage = statusMessage;
    if (Array.isArray(headers)) {
      for (let i = 0; i + 1 < headers.length; i += 2) this.appendHeader(headers[i], headers[i + 1]);
    } else if (headers) {
      for (const [k, v] of Object.entries(headers)) this.setHeader(k, v);
    }
    this.#sendHead();
    return this;
  }

  flushHeaders() {
    this.#sendHead();
  }

  writeContinue() {}
  writeEarlyHints() {}
  setTimeout(_ms, callback) {
    if (callback) this.once("timeout", callback);
    return this;
  }

  #sendHead() {
    if (this.headersSent) return;
    this.headersSent = true;
    const headers = new Headers();
    for (const [, [name, value]] of this.#headers) {
      if (Array.isArray(value)) for (const v of value) headers.append(name, v);
      else headers.append(name, value);
    }
    const noBody = this.#head || NULL_BODY.has(this.statusCode);
    let body = null;
    if (!noBody) {
      body = new ReadableStream({
        start: (controller) => {
          this.#controller = controller;
        },
      });
    }
    this.#respond(
      new Response(body, {
        status: this.statusCode,
        statusText: this.statusMessage || STATUS_CODES[this.statusCode] || "",
        headers,
      }),
    );
  }

  _write(chunk, encoding, callback) {
    this.#sendHead();
    if (this.#controller !== null) {
      const bytes = typeof chunk === "string" ? Buffer.from(chunk, encoding) : chunk;
      this.#controller.enqueue(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength).slice());
    }
    callback();
  }

  _final(callback) {
    this.#sendHead();
    try {
      this.#controller?.close();
    } catch {
      // already closed by a failure
    }
    callback();
  }

  _destroy(error, callback) {
    if (error) {
      if (!this.headersSent) this.#respond(null, error);
      else
        try {
          this.#controller?.error(error);
        } catch {
          // already closed
        }
    }
    callback(error);
  }
}

const servers = new Map();
const kHandle = Symbol("handle");

export class Server extends EventEmitter {
  #port = null;
  listening = false;
  timeout = 0;
  keepAliveTimeout = 5000;
  headersTimeout = 60000;
  requestTimeout = 300000;
  maxHeadersCount = null;

  constructor(options, listener) {
    super();
    if (typeof options === "function") listener = options;
    if (typeof listener === "function") this.on("request", listener);
  }

  listen(...args) {
    let port = args[0];
    if (typeof port === "object" && port !== null) port = port.port;
    const callback = args.find((a) => typeof a === "function");
    port = port === undefined || port === null ? 0 : Number(port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new RangeError(`options.port should be >= 0 and < 65536. Received ${args[0]}.`);
    }
    if (port === 0) {
      port = 1;
      while (servers.has(port)) port++;
    }
    if (servers.has(port) && servers.get(port) !== this) {
      const err = new Error(`listen EADDRINUSE: address already in use :::${port}`);
      err.code = "EADDRINUSE";
      throw err;
    }
    servers.set(port, this);
    this.#port = port;
    this.listening = true;
    queueMicrotask(() => {
      this.emit("listening");
      callback?.();
    });
    return this;
  }

  close(callback) {
    if (this.#port !== null && servers.get(this.#port) === this) servers.delete(this.#port);
    this.#port = null;
    this.listening = false;
    queueMicrotask(() => {
      this.emit("close");
      callback?.();
    });
    return this;
  }

  closeAllConnections() {}
  closeIdleConnections() {}
  setTimeout(_ms, callback) {
    if (callback) this.on("timeout", callback);
    return this;
  }

  address() {
    return this.#port === null ? null : { address: "::", family: "IPv6", port: this.#port };
  }

  [kHandle](request) {
    return new Promise((resolve, reject) => {
      const req = new IncomingMessage(request);
      const res = new ServerResponse(req, (response, error) => {
        if (response) resolve(response);
        else reject(error);
      });
      try {
        if (this.listenerCount("request") === 0) {
          res.statusCode = 404;
          res.end();
          return;
        }
        this.emit("request", req, res);
      } catch (e) {
        reject(e);
      }
    });
  }
}

export function createServer(options, listener) {
  return new Server(options, listener);
}

// For `cloudflare:node`: the fetch handler of a server or a port.
export function handlerFor(target) {
  return async function fetch(request) {
    let server = target;
    if (!(server instanceof Server)) {
      const port = Number(target?.port ?? target);
      server = servers.get(port);
      if (server === undefined) {
        throw new Error(`httpServerHandler: no server is listening on port ${port}`);
      }
    }
    return server[kHandle](request);
  };
}

function clientNotSupported(name) {
  return function () {
    const err = new Error(`http.${name}() is not implemented in edged: use fetch()`);
    err.code = "ERR_METHOD_NOT_IMPLEMENTED";
    throw err;
  };
}
export const request = clientNotSupported("request");
export const get = clientNotSupported("get");
export class Agent {
  constructor(options = {}) {
    this.options = options;
  }
}
export const globalAgent = new Agent();
export const maxHeaderSize = 16384;
export function validateHeaderName(name) {
  if (typeof name !== "string" || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) {
    const err = new TypeError(`Header name must be a valid HTTP token ["${name}"]`);
    err.code = "ERR_INVALID_HTTP_TOKEN";
    throw err;
  }
}
export function validateHeaderValue(name, value) {
  if (value === undefined || /[^\t\x20-\x7e\x80-\xff]/.test(String(value))) {
    const err = new TypeError(`Invalid value "${value}" for header "${name}"`);
    err.code = "ERR_INVALID_CHAR";
    throw err;
  }
}

export default {
  STATUS_CODES,
  METHODS,
  IncomingMessage,
  ServerResponse,
  Server,
  createServer,
  request,
  get,
  Agent,
  globalAgent,
  maxHeaderSize,
  validateHeaderName,
  validateHeaderValue,
};
