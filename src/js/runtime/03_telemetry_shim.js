// Stands in for deno_telemetry, which deno_fetch's 26_fetch.js imports for
// OpenTelemetry spans. edged traces outbound fetches in Rust, so tracing is off here.
export const TRACING_ENABLED = false;
export function builtinTracer() {
  throw new Error("telemetry is not enabled");
}
export function enterSpan() {}
export function restoreContext() {}
export function updateSpanFromRequest() {}
export function updateSpanFromResponse() {}
