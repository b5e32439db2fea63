// edged runtime: objects passed by reference over JS RPC -- `RpcTarget`
// instances and functions in what an RPC method returns become stubs on the
// caller's side, as in Workers.
//
// The callee (the isolate of a WorkerEntrypoint, or one Durable Object) keeps
// what it returned in an `Exports` table: a *session* per result, each holding
// the targets in the order they were found. The result is structured-cloned
// with each target replaced by a host object, so the caller's deserializer
// puts a stub in its place. Rust carries the session id and the count back
// with the response and, on the caller's side, keeps them in a stub session
// (src/js/rpc.rs) tied to the calling request, together with the *route* to
// the callee: the very isolate that answered (a service) or the object (a
// Durable Object). JS on the caller's side holds only a small resource id of
// that session and an index; calls on a stub travel as runtime events
// (method "RPC", url `rpc-call:<session>:<index>:<name>`) along that route,
// and disposing a stub sends `rpc-dispose:<session>:<index>`. When the calling
// request ends, Rust disposes whatever it still holds.
//
// Nothing here decides who may call what: the route and the session belong
// to Rust; a session id names only the callee's own table (per isolate, or
// per object), so a forged one reaches nothing of anyone else's.

import { core, primordials } from "ext:core/mod.js";
import { op_edged_log, op_rpc_stub_call, op_rpc_stub_dispose } from "ext:core/ops";
import { beforeOutgoing, fromRemote } from "ext:edged/00_globals.js";

const {
  ArrayIsArray,
  ArrayPrototypePush,
  Error,
  FunctionPrototypeCall,
  MapPrototypeDelete,
  MapPrototypeGet,
  MapPrototypeSet,
  MathFloor,
  MathRandom,
  Number,
  ObjectCreate,
  ObjectDefineProperty,
  ObjectFreeze,
  ObjectGetOwnPropertyDescriptor,
  ObjectGetPrototypeOf,
  ObjectKeys,
  ObjectPrototype,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeThen,
  Proxy,
  ReflectApply,
  SafeMap,
  String,
  StringPrototypeIndexOf,
  StringPrototypeSlice,
  Symbol,
  TypeError,
} = primordials;

const SymbolDispose = Symbol.dispose;
const hostObjectBrand = core.hostObjectBrand;

// Options and descriptors without a prototype: what a tenant puts on
// Object.prototype (`hostObjects`, `transferredArrayBuffers`, `get`) is not
// read as one of them.
export const STORAGE = ObjectFreeze({ __proto__: null, forStorage: true });

// `import { RpcTarget } from "cloudflare:workers"`: instances of classes that
// extend it are passed by reference; their class's methods and getters are
// what a stub reaches (never own instance properties).
export class RpcTarget {}
const RpcTargetPrototype = RpcTarget.prototype;

// Workers' messages.
const DISPOSED = "Attempted to use RPC stub after it has been disposed.";
const NO_REFS_IN_ARGS =
  "edged cannot pass an RpcTarget or a function as an RPC argument yet; return it from the call instead.";

// How deep and how wide the walk for targets goes (structured clone would
// refuse anything deeper anyway; the CPU limit bounds the rest).
const MAX_DEPTH = 64;
const MAX_NODES = 100000;
// Sessions one callee keeps open at a time, and targets one answer passes
// (src/js/rpc.rs refuses more, whatever JS says).
const MAX_SESSIONS = 10000;
const MAX_TARGETS = 10000;

function isRef(v) {
  return typeof v === "function" ||
    (v !== null && typeof v === "object" && ObjectPrototypeIsPrototypeOf(RpcTargetPrototype, v));
}

// Containers the walk looks into: arrays and plain objects.
function isPlain(v) {
  if (v === null || typeof v !== "object") return false;
  if (ArrayIsArray(v)) return true;
  const proto = ObjectGetPrototypeOf(v);
  return proto === ObjectPrototype || proto === null;
}

// Whether `value` holds a target (or a function) where the walk looks.
function hasRefs(value) {
  const seen = new SafeMap();
  let nodes = 0;
  const walk = (v, depth) => {
    if (isRef(v)) return true;
    if (!isPlain(v) || depth > MAX_DEPTH || MapPrototypeGet(seen, v) !== undefined) return false;
    if (++nodes > MAX_NODES) return false;
    MapPrototypeSet(seen, v, true);
    if (ArrayIsArray(v)) {
      for (let i = 0; i < v.length; i++) if (walk(v[i], depth + 1)) return true;
      return false;
    }
    const keys = ObjectKeys(v);
    for (let i = 0; i < keys.length; i++) if (walk(v[keys[i]], depth + 1)) return true;
    return false;
  };
  return walk(value, 0);
}

// A copy of `value` with each target replaced by a host object; `found` gets
// the targets and `holders` the host objects, index for index.
function replaceRefs(value, found, holders) {
  const refs = new SafeMap();
  const copies = new SafeMap();
  const walk = (v, depth) => {
    if (isRef(v)) {
      let holder = MapPrototypeGet(refs, v);
      if (holder === undefined) {
        holder = ObjectCreate(null);
        holder[hostObjectBrand] = true;
        MapPrototypeSet(refs, v, holder);
        ArrayPrototypePush(found, v);
        ArrayPrototypePush(holders, holder);
      }
      return holder;
    }
    if (!isPlain(v) || depth > MAX_DEPTH) return v;
    const done = MapPrototypeGet(copies, v);
    if (done !== undefined) return done;
    if (ArrayIsArray(v)) {
      const out = [];
      MapPrototypeSet(copies, v, out);
      for (let i = 0; i < v.length; i++) out[i] = walk(v[i], depth + 1);
      return out;
    }
    const out = ObjectGetPrototypeOf(v) === null ? ObjectCreate(null) : {};
    MapPrototypeSet(copies, v, out);
    const keys = ObjectKeys(v);
    for (let i = 0; i < keys.length; i++) {
      ObjectDefineProperty(out, keys[i], {
        __proto__: null,
        value: walk(v[keys[i]], depth + 1),
        writable: true,
        enumerable: true,
        configurable: true,
      });
    }
    return out;
  };
  return walk(value, 0);
}

// Serializes the arguments of an outgoing call (references are refused).
export function encodeArgs(args) {
  if (hasRefs(args)) throw new TypeError(NO_REFS_IN_ARGS);
  return core.serialize(args, STORAGE);
}

// One callee's exported targets: a table per isolate (a worker) or per
// Durable Object.
export class Exports {
  // Session ids start at a random point, so that a stub kept from an earlier
  // activation of the same object (which its route still reaches) never
  // names a session of this one.
  #next = MathFloor(MathRandom() * 2 ** 52) + 1;
  #sessions = new SafeMap();
  // target -> how many live session entries name it.
  #refs = new SafeMap();

  // The answer to an RPC event whose method returned `value`: the dispatch
  // result [200, [], bytes] plus, when it holds targets, [session, count].
  answer(value) {
    if (!hasRefs(value)) {
      return [200, [], core.serialize(value, STORAGE)];
    }
    const found = [];
    const holders = [];
    const copy = replaceRefs(value, found, holders);
    if (found.length > MAX_TARGETS) {
      throw new Error(`An RPC result may pass at most ${MAX_TARGETS} RpcTargets and functions by reference.`);
    }
    const bytes = core.serialize(copy, { __proto__: null, forStorage: true, hostObjects: holders });
    if (this.#sessions.size >= MAX_SESSIONS) {
      throw new Error(
        `Too many RPC stubs are open on this callee (${MAX_SESSIONS}); dispose stubs when done with them.`,
      );
    }
    const session = this.#next++;
    MapPrototypeSet(this.#sessions, session, found);
    for (let i = 0; i < found.length; i++) {
      MapPrototypeSet(this.#refs, found[i], (MapPrototypeGet(this.#refs, found[i]) ?? 0) + 1);
    }
    return [200, [], bytes, null, null, false, [session, found.length]];
  }

  // A call on, a property of, or the disposal of an exported target:
  // url `rpc-call:<session>:<index>:<name>`, `rpc-get:...` or
  // `rpc-dispose:<session>:<index>` (`*`: the whole session).
  async serve(url, body) {
    const colon = StringPrototypeIndexOf(url, ":");
    const kind = StringPrototypeSlice(url, 0, colon);
    let rest = StringPrototypeSlice(url, colon + 1);
    const next = () => {
      const at = StringPrototypeIndexOf(rest, ":");
      const part = at < 0 ? rest : StringPrototypeSlice(rest, 0, at);
      rest = at < 0 ? "" : StringPrototypeSlice(rest, at + 1);
      return part;
    };
    const session = Number(next());
    const indexText = next();
    if (kind === "rpc-dispose") {
      this.#dispose(session, indexText === "*" ? -1 : Number(indexText));
      return [200, [], null];
    }
    const targets = MapPrototypeGet(this.#sessions, session);
    const target = targets?.[Number(indexText)];
    if (target === undefined || target === null) throw new Error(DISPOSED);
    const name = rest;
    if (kind === "rpc-call") {
      const args = core.deserialize(body, STORAGE);
      if (name === "") {
        if (typeof target !== "function") {
          throw new TypeError("The RPC receiver is not a function.");
        }
        return this.answer(await ReflectApply(target, undefined, args));
      }
      const method = member(target, name);
      if (method === undefined || typeof method.value !== "function") {
        throw new TypeError(`The RPC receiver does not implement the method "${name}".`);
      }
      return this.answer(await ReflectApply(method.value, target, args));
    }
    if (kind === "rpc-get") {
      const property = member(target, name);
      if (property === undefined) return this.answer(undefined);
      const value = property.get !== undefined
        ? FunctionPrototypeCall(property.get, target)
        : property.value;
      return this.answer(await value);
    }
    throw new TypeError(`unknown RPC event ${kind}`);
  }

  #dispose(session, index) {
    const targets = MapPrototypeGet(this.#sessions, session);
    if (targets === undefined) return;
    const release = (i) => {
      const target = targets[i];
      if (target === null || target === undefined) return;
      targets[i] = null;
      const left = (MapPrototypeGet(this.#refs, target) ?? 1) - 1;
      if (left > 0) {
        MapPrototypeSet(this.#refs, target, left);
        return;
      }
      MapPrototypeDelete(this.#refs, target);
      // The last stub is gone: the target's own disposer runs, as in Workers.
      if (typeof target !== "function" && typeof target[SymbolDispose] === "function") {
        try {
          const out = FunctionPrototypeCall(target[SymbolDispose], target);
          if (out !== null && typeof out === "object" && typeof out.then === "function") {
            PromisePrototypeThen(out, undefined, (e) => op_edged_log(3, `RpcTarget disposer threw: ${e}`));
          }
        } catch (e) {
          op_edged_log(3, `RpcTarget disposer threw: ${e}`);
        }
      }
    };
    if (index < 0) {
      for (let i = 0; i < targets.length; i++) release(i);
    } else {
      release(index);
    }
    let open = false;
    for (let i = 0; i < targets.length; i++) if (targets[i] !== null) open = true;
    if (!open) MapPrototypeDelete(this.#sessions, session);
  }

  // The callee leaves its isolate (an object hibernates or is evicted).
  clear() {
    this.#sessions = new SafeMap();
    this.#refs = new SafeMap();
  }
}

// What a stub may reach on its target: a function's own call only; an
// RpcTarget's methods and getters from its class (the prototype chain below
// RpcTarget.prototype), never own properties, `constructor`, or Object's.
function member(target, name) {
  if (typeof target === "function" || name === "constructor") return undefined;
  let proto = ObjectGetPrototypeOf(target);
  while (proto !== null && proto !== RpcTargetPrototype && proto !== ObjectPrototype) {
    const d = ObjectGetOwnPropertyDescriptor(proto, name);
    if (d !== undefined) return d;
    proto = ObjectGetPrototypeOf(proto);
  }
  return undefined;
}

// Caller side.

// The value of an RPC answer `[bytes, sessionRid, count]`, with a stub for
// each target the callee passed by reference.
export function decodeAnswer(out) {
  const bytes = out[0];
  const rid = out[1];
  if (rid === null || rid === undefined) return core.deserialize(bytes, STORAGE);
  const count = out[2];
  const stubs = [];
  for (let i = 0; i < count; i++) ArrayPrototypePush(stubs, makeStub(rid, i));
  const value = core.deserialize(bytes, { __proto__: null, forStorage: true, hostObjects: stubs });
  // Disposing the result disposes every stub in it.
  if (value !== null && typeof value === "object") {
    ObjectDefineProperty(value, SymbolDispose, {
      __proto__: null,
      value: () => {
        for (let i = 0; i < stubs.length; i++) stubs[i][SymbolDispose]();
      },
      writable: true,
      enumerable: false,
      configurable: true,
    });
  }
  return value;
}

async function callStub(state, kind, name, args) {
  if (state.disposed) throw new Error(DISPOSED);
  const bytes = kind === 0 ? encodeArgs(args) : null;
  await beforeOutgoing();
  let out;
  try {
    out = await op_rpc_stub_call(state.shared.rid, state.shared.index, kind, String(name), bytes);
  } catch (e) {
    throw fromRemote(e);
  }
  return decodeAnswer(out);
}

function disposeStub(state) {
  if (state.disposed) return;
  state.disposed = true;
  if (--state.shared.refs === 0) op_rpc_stub_dispose(state.shared.rid, state.shared.index);
}

// A property of a stub: callable (a method call) and awaitable (its value).
function stubMember(state, name) {
  const call = (...args) => callStub(state, 0, name, args);
  call.then = (resolve, reject) => PromisePrototypeThen(callStub(state, 1, name, null), resolve, reject);
  return call;
}

function stubOf(shared) {
  const state = { shared, disposed: false };
  const handler = {
    __proto__: null,
    get(_target, prop) {
      if (prop === SymbolDispose) return () => disposeStub(state);
      if (typeof prop === "symbol" || prop === "then") return undefined;
      if (prop === "dup") {
        return () => {
          if (state.disposed) throw new Error(DISPOSED);
          shared.refs++;
          return stubOf(shared);
        };
      }
      return stubMember(state, prop);
    },
    apply(_target, _this, args) {
      return callStub(state, 0, "", args);
    },
    set() {
      return false;
    },
    defineProperty() {
      return false;
    },
  };
  // A function underneath, so that a stub of a function can be called.
  return new Proxy(function () {}, handler);
}

function makeStub(rid, index) {
  return stubOf({ rid, index, refs: 1 });
}
