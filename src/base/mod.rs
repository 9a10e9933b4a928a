//! Shared plumbing below every other part: a cheap monotonic clock (`clock`), civil
//! dates for the timestamps written without a formatter (`calendar`), the crate's error type, ZeroMQ endpoints and
//! socket helpers, the shutdown flag, a fast hash for the hot path's maps, the open-file
//! limit, rate-limited warnings (`log_limit`), Prometheus metrics (`metrics`) and the
//! scheduling policy of a busy process's threads (`sched`). Nothing here knows about HTTP, the
//! pipeline's messages or jobs.

pub mod calendar;
pub mod clock;
pub mod endpoint;
pub mod error;
pub mod fast_hash;
pub mod fd_limit;
pub mod log_limit;
pub mod metrics;
pub mod sched;
pub mod shutdown;
pub mod sockets;

pub use error::{Error, Result};
pub use shutdown::Shutdown;
