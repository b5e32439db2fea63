// node:timers/promises.
function abortError(signal) {
  const err = new DOMException("The operation was aborted", "AbortError");
  err.cause = signal?.reason;
  return err;
}

export function setTimeout(delay = 1, value = undefined, options = undefined) {
  const signal = options?.signal;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const id = globalThis.setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(value);
    }, delay);
    function onAbort() {
      globalThis.clearTimeout(id);
      reject(abortError(signal));
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export function setImmediate(value = undefined, options = undefined) {
  return setTimeout(0, value, options);
}

export async function* setInterval(delay = 1, value = undefined, options = undefined) {
  while (true) {
    yield await setTimeout(delay, value, options);
  }
}

export const scheduler = {
  wait(delay, options = undefined) {
    return setTimeout(delay, undefined, options);
  },
  yield() {
    return setTimeout(0);
  },
};

export const promises = { setTimeout, setImmediate, setInterval, scheduler };
export default promises;
