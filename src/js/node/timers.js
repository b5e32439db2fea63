// node:timers — Node's Timeout objects over the Workers timers (which keep
// a timer to the request that set it).
class Timeout {
  #id;
  #refed = true;
  #restart;
  constructor(id, restart) {
    this.#id = id;
    this.#restart = restart;
  }
  ref() {
    this.#refed = true;
    return this;
  }
  unref() {
    this.#refed = false;
    return this;
  }
  hasRef() {
    return this.#refed;
  }
  refresh() {
    globalThis.clearTimeout(this.#id);
    this.#id = this.#restart();
    return this;
  }
  close() {
    globalThis.clearTimeout(this.#id);
    return this;
  }
  [Symbol.toPrimitive]() {
    return this.#id;
  }
  [Symbol.dispose]() {
    this.close();
  }
}

class Immediate {
  #id;
  constructor(id) {
    this.#id = id;
  }
  ref() {
    return this;
  }
  unref() {
    return this;
  }
  hasRef() {
    return true;
  }
  [Symbol.toPrimitive]() {
    return this.#id;
  }
}

function idOf(timer) {
  return timer instanceof Timeout || timer instanceof Immediate ? timer[Symbol.toPrimitive]() : timer;
}

export function setTimeout(callback, delay, ...args) {
  const start = () => globalThis.setTimeout(callback, delay, ...args);
  return new Timeout(start(), start);
}
export function setInterval(callback, delay, ...args) {
  const start = () => globalThis.setInterval(callback, delay, ...args);
  return new Timeout(start(), start);
}
export function setImmediate(callback, ...args) {
  return new Immediate(globalThis.setTimeout(callback, 0, ...args));
}
export function clearTimeout(timer) {
  globalThis.clearTimeout(idOf(timer));
}
export function clearInterval(timer) {
  globalThis.clearInterval(idOf(timer));
}
export function clearImmediate(timer) {
  globalThis.clearTimeout(idOf(timer));
}

export { promises } from "./timers_promises.js";
import { promises } from "./timers_promises.js";

export default {
  setTimeout,
  setInterval,
  setImmediate,
  clearTimeout,
  clearInterval,
  clearImmediate,
  promises,
};
