//! Errors of the engine layer.

/// Creating, binding or running an isolate failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EngineError {
    /// The tenant's script did not parse, threw at top level, or has no usable
    /// default export. The message reads like `SyntaxError: … (worker.js:3:5)`.
    #[error("{0}")]
    Script(String),
    /// JavaScript ran past its CPU budget and was terminated.
    #[error("exceeded the CPU time limit")]
    CpuLimit,
    /// The isolate reached its heap limit and was terminated.
    #[error("exceeded the memory limit")]
    MemoryLimit,
    /// The engine itself failed (should not happen; logged with details).
    #[error("engine error: {0}")]
    Internal(String),
}

/// One request's failure inside a worker.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum InvokeError {
    /// The handler threw (or its promise rejected); the text is the stack.
    #[error("uncaught exception: {0}")]
    Exception(String),
    /// The handler returned something that is not a Response.
    #[error("{0}")]
    BadResponse(String),
    /// The isolate running the request was terminated for using too much CPU.
    #[error("the worker exceeded its CPU time limit")]
    CpuLimit,
    /// The isolate running the request was terminated for using too much memory.
    #[error("the worker exceeded its memory limit")]
    MemoryLimit,
    /// The isolate was stopping and did not start the request (safe to retry).
    #[error("the isolate is stopping")]
    Stopping,
    /// The isolate went away before answering.
    #[error("the worker is unavailable: {0}")]
    Unavailable(String),
    /// The handler awaits something nothing can settle any more (the
    /// isolate has no I/O or timer left that could), as Workers reports it.
    #[error("The script will never generate a response.")]
    NeverResponds,
    /// The handler did not produce its response within the node's limit.
    #[error("the worker did not respond within {0} s")]
    Timeout(u64),
    /// A call to an object on another node failed in the cluster (owner down,
    /// peer timeout, fenced node); the text is the whole message the caller
    /// sees, ending in "(retryable)" when trying again can succeed.
    #[error("{0}")]
    Cluster(String),
}

/// What a caller sees of a callee's exception (a service, an object, an RPC
/// stub's target): its first line, "Class: message", which `fromRemote`
/// turns back into that class.
pub fn remote_exception(stack: &str) -> String {
    stack.lines().next().unwrap_or("Error").to_owned()
}

impl From<EngineError> for InvokeError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::CpuLimit => InvokeError::CpuLimit,
            EngineError::MemoryLimit => InvokeError::MemoryLimit,
            other => InvokeError::Unavailable(other.to_string()),
        }
    }
}
