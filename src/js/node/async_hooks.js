// node:async_hooks — AsyncLocalStorage and AsyncResource over the runtime's
// async frames (src/js/node.rs): a frame's stores are a Map from each
// storage's key to its value, copied on write, so a continuation keeps the
// stores of the code that created it.
const n = globalThis.__edged_cloudflare_workers?.node;
if (n === undefined) {
  throw new Error("node:async_hooks can only be imported while a worker's modules first evaluate");
}
const { asyncStores, setAsyncStores } = n;
const MapCtor = Map;

function withStores(stores, fn, thisArg, args) {
  const previous = asyncStores();
  setAsyncStores(stores);
  try {
    return Reflect.apply(fn, thisArg, args);
  } finally {
    setAsyncStores(previous);
  }
}

function storesWith(key, value) {
  const next = new MapCtor(asyncStores() ?? []);
  if (value === undefined) next.delete(key);
  else next.set(key, value);
  return next.size === 0 ? undefined : next;
}

export class AsyncLocalStorage {
  #key = {};

  getStore() {
    return asyncStores()?.get(this.#key);
  }

  run(store, callback, ...args) {
    const next = new MapCtor(asyncStores() ?? []);
    next.set(this.#key, store);
    return withStores(next, callback, undefined, args);
  }

  exit(callback, ...args) {
    return withStores(storesWith(this.#key, undefined), callback, undefined, args);
  }

  enterWith(store) {
    const next = new MapCtor(asyncStores() ?? []);
    next.set(this.#key, store);
    setAsyncStores(next);
  }

  disable() {
    setAsyncStores(storesWith(this.#key, undefined));
  }

  static bind(fn) {
    if (typeof fn !== "function") throw new TypeError('The "fn" argument must be of type function');
    const stores = asyncStores();
    return function (...args) {
      return withStores(stores, fn, this, args);
    };
  }

  static snapshot() {
    const stores = asyncStores();
    return function (fn, ...args) {
      return withStores(stores, fn, this, args);
    };
  }
}

let nextAsyncId = 1;

export class AsyncResource {
  #stores = asyncStores();
  #asyncId = nextAsyncId++;
  #triggerAsyncId;
  constructor(type, options = undefined) {
    if (typeof type !== "string") throw new TypeError('The "type" argument must be of type string');
    this.type = type;
    this.#triggerAsyncId =
      typeof options === "number" ? options : (options?.triggerAsyncId ?? 0);
  }

  runInAsyncScope(fn, thisArg, ...args) {
    return withStores(this.#stores, fn, thisArg, args);
  }

  bind(fn, thisArg = undefined) {
    const resource = this;
    const bound = function (...args) {
      return resource.runInAsyncScope(fn, thisArg === undefined ? this : thisArg, ...args);
    };
    Object.defineProperty(bound, "length", { value: fn.length });
    return bound;
  }

  static bind(fn, type = undefined, thisArg = undefined) {
    return new AsyncResource(type ?? (fn.name || "bound-anonymous-fn")).bind(fn, thisArg);
  }

  emitDestroy() {
    return this;
  }

  asyncId() {
    return this.#asyncId;
  }

  triggerAsyncId() {
    return this.#triggerAsyncId;
  }
}

// Workers has no async hooks; these are what it exports in their place.
export function executionAsyncId() {
  return 0;
}
export function triggerAsyncId() {
  return 0;
}
export function executionAsyncResource() {
  return {};
}
export function createHook() {
  return {
    enable() {
      return this;
    },
    disable() {
      return this;
    },
  };
}
export const asyncWrapProviders = Object.freeze({ __proto__: null });

export default {
  AsyncLocalStorage,
  AsyncResource,
  executionAsyncId,
  triggerAsyncId,
  executionAsyncResource,
  createHook,
  asyncWrapProviders,
};
