//! [`StaticFiles`]: a stage that serves the files under a root directory, as the C++
//! original's `prime_filed` does, through the pipeline like any other work.
//!
//! - `GET` and `HEAD` (others get `405` with `Allow: GET, HEAD`); content types by the
//!   file name's extension (`mime_guess`); `index.html` for a directory named with its
//!   trailing slash, a `301` to that form for one named without it.
//! - A strong `ETag` (inode, size and modification time) and `Last-Modified`; the
//!   conditional fields of RFC 9110 §13 in its order of precedence: `If-Match` and
//!   `If-Unmodified-Since` (`412`), `If-None-Match` and `If-Modified-Since` (`304`),
//!   `If-Range`.
//! - `Range` on a GET (RFC 9110 §14): one range is `206` with `Content-Range`, several
//!   a `206` of `multipart/byteranges` (overlapping ranges merged; more than 16 get the
//!   whole file), none satisfiable `416` with `Content-Range: bytes */LEN`.
//! - `Cache-Control` as configured ([`StaticFiles::cache_control`]).
//! - Nothing outside the root is reachable (see `files/path.rs`): dot segments, their
//!   encoded forms, encoded slashes, backslashes, NUL and symbolic links leading out are
//!   all answered `404`, like a missing file.
//! - Answers up to [`SMALL`] go whole; larger ones are read and sent in pieces of
//!   [`PIECE`] bytes as a stream with `Content-Length`, which a slow client paces (see
//!   [`crate::pipeline::stream`]): a file is never whole in memory.
//!
//! Files are served to requests a client waits on; an asynchronous job (its answer is
//! stored whole) is refused with `400`.

mod conditions;
mod path;
mod ranges;

use super::api::{HttpJob, HttpWork, Next, StageError};
use crate::http::{Request, Response};
use conditions::{Precondition, Validators};
use path::Resolved;
use ranges::{Piece, Ranges};
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Answers up to this many bytes go whole in one message (256 KiB); larger ones stream.
pub const SMALL: u64 = 256 * 1024;
/// The size of the pieces a large answer is read and sent in (256 KiB): the front end's
/// message size to libzmq, so each piece goes on as it is.
pub const PIECE: usize = 256 * 1024;

/// The methods a file answers.
const ALLOW: &str = "GET, HEAD";

/// Serves the files under a root directory (see the module's notes). Each worker keeps
/// its own copy, with a read buffer of [`PIECE`] bytes once it streams.
///
/// ```no_run
/// use prime_server::stages::StaticFiles;
/// let files = StaticFiles::new("/srv/www")?.cache_control("public, max-age=60");
/// let pipeline = prime_server::Pipeline::new().http_stage("files", 4, files);
/// # drop(pipeline);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct StaticFiles {
    /// The root, canonical.
    root: PathBuf,
    /// What `Cache-Control` says, if anything.
    cache_control: Option<String>,
    /// The file served for a directory.
    index: String,
    /// Where pieces are read, allocated at the first stream.
    buffer: Vec<u8>,
}

impl StaticFiles {
    /// Serves the files under `root`, which must be a directory.
    ///
    /// # Errors
    /// The root does not exist, cannot be read, or is not a directory.
    pub fn new(root: impl AsRef<Path>) -> std::io::Result<Self> {
        let root = root.as_ref().canonicalize()?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(StaticFiles {
            root,
            cache_control: None,
            index: "index.html".to_string(),
            buffer: Vec::new(),
        })
    }

    /// Sends `Cache-Control: VALUE` with every file (and every `304`), e.g.
    /// `public, max-age=3600` or `no-cache` (RFC 9111 §5.2).
    pub fn cache_control(mut self, value: impl Into<String>) -> Self {
        self.cache_control = Some(value.into());
        self
    }

    /// The root, canonical.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The validators and cache fields every answer about a file carries.
    fn file_fields(&self, mut response: Response, validators: &Validators) -> Response {
        response = response
            .header("ETag", validators.etag.as_str())
            .header("Last-Modified", validators.last_modified_text());
        if let Some(value) = &self.cache_control {
            response = response.header("Cache-Control", value.as_str());
        }
        response
    }

    /// Answers `request` (a GET or HEAD whose target resolved) from the file at `path`.
    fn answer(
        &mut self,
        job: &mut HttpJob<'_, '_>,
        request: &Request,
        path: &Path,
    ) -> Result<Next, StageError> {
        let id = job.envelope().request_id;
        let not_found = || StageError::not_found("no such file");
        // O_NONBLOCK: opening a FIFO put under the root must not block the worker;
        // O_NOFOLLOW: the path is canonical, so a link here was put in since.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| {
                log::debug!("request {id}: {}: {e}", path.display());
                not_found()
            })?;
        let metadata = file.metadata().map_err(|_| not_found())?;
        if !metadata.is_file() {
            log::debug!("request {id}: {} is not a regular file", path.display());
            return Err(not_found());
        }
        let len = metadata.len();
        let validators = Validators::of(&metadata);
        match conditions::evaluate(request, &validators) {
            Precondition::Proceed => {}
            Precondition::NotModified => {
                return Ok(Next::respond(
                    self.file_fields(Response::new(304), &validators),
                ))
            }
            Precondition::Failed => {
                return Err(StageError::new(412, "a precondition does not hold"));
            }
        }
        let content_type = mime_guess::from_path(path)
            .first_raw()
            .unwrap_or("application/octet-stream");
        let ranges = match request.header("range") {
            Some(field)
                if request.method == "GET" && conditions::if_range_holds(request, &validators) =>
            {
                ranges::parse(field, len)
            }
            _ => Ranges::Whole,
        };
        let base = Response::new(200).header("Accept-Ranges", "bytes");
        let (response, pieces) = match ranges {
            Ranges::Whole => (
                base.header("Content-Type", content_type),
                vec![Piece::File { offset: 0, len }],
            ),
            Ranges::Parts(parts) if parts.len() == 1 => {
                let (first, last) = parts[0];
                let response = Response {
                    status: 206,
                    ..base
                }
                .header("Content-Type", content_type)
                .header("Content-Range", format!("bytes {first}-{last}/{len}"));
                let piece = Piece::File {
                    offset: first,
                    len: last - first + 1,
                };
                (response, vec![piece])
            }
            Ranges::Parts(parts) => {
                let boundary = boundary();
                let response = Response {
                    status: 206,
                    ..base
                }
                .header(
                    "Content-Type",
                    format!("multipart/byteranges; boundary={boundary}"),
                );
                let pieces = ranges::multipart(&parts, len, content_type, &boundary);
                (response, pieces)
            }
            Ranges::Unsatisfiable => {
                let response = Response::error(416, "no range of the Range field is in the file")
                    .header("Content-Range", format!("bytes */{len}"));
                return Ok(Next::respond(self.file_fields(response, &validators)));
            }
        };
        let response = self.file_fields(response, &validators);
        let total: u64 = pieces.iter().map(Piece::len).sum();
        if request.method == "HEAD" {
            // The length a GET would get, and no body.
            return Ok(Next::respond(
                response.header("Content-Length", total.to_string()),
            ));
        }
        if total <= SMALL {
            let mut body = Vec::with_capacity(total as usize);
            for piece in &pieces {
                match piece {
                    Piece::Bytes(bytes) => body.extend_from_slice(bytes),
                    Piece::File { offset, len } => {
                        let start = body.len();
                        body.resize(start + *len as usize, 0);
                        file.read_exact_at(&mut body[start..], *offset)
                            .map_err(|e| read_failed(id, path, e))?;
                    }
                }
            }
            return Ok(Next::respond(response.body(body)));
        }
        self.stream(job, &response, &file, path, &pieces, total)
    }

    /// Sends a large answer in pieces of at most [`PIECE`] bytes.
    fn stream(
        &mut self,
        job: &HttpJob<'_, '_>,
        response: &Response,
        file: &File,
        path: &Path,
        pieces: &[Piece],
        total: u64,
    ) -> Result<Next, StageError> {
        let id = job.envelope().request_id;
        self.buffer.resize(PIECE, 0);
        let mut stream = job
            .stream_sized(response, total)
            .map_err(|e| StageError::internal(e.to_string()))?;
        for piece in pieces {
            let (mut offset, mut left) = match piece {
                Piece::Bytes(bytes) => {
                    if let Err(e) = stream.send(bytes) {
                        return Ok(stopped(id, &e));
                    }
                    continue;
                }
                Piece::File { offset, len } => (*offset, *len),
            };
            while left > 0 {
                if job.interrupted() {
                    log::debug!("request {id}: interrupted while sending {}", path.display());
                    return Ok(Next::Streamed);
                }
                let n = left.min(PIECE as u64) as usize;
                let buffer = &mut self.buffer[..n];
                if let Err(e) = file.read_exact_at(buffer, offset) {
                    // The file shrank or failed under us: the answer is cut short
                    // (the stream, dropped unfinished, closes the connection).
                    log::warn!("request {id}: {}: {e}", path.display());
                    return Ok(Next::Streamed);
                }
                if let Err(e) = stream.send(buffer) {
                    return Ok(stopped(id, &e));
                }
                offset += n as u64;
                left -= n as u64;
            }
        }
        if let Err(e) = stream.finish() {
            log::warn!("request {id}: {e}");
        }
        Ok(Next::Streamed)
    }
}

/// A stream that could not go on: the client left, the deadline passed, or the
/// loopback refused a part.
fn stopped(request_id: u64, error: &crate::pipeline::stream::StreamError) -> Next {
    if error.is_interrupted() {
        log::debug!("request {request_id}: {error}");
    } else {
        log::warn!("request {request_id}: {error}");
    }
    Next::Streamed
}

fn read_failed(request_id: u64, path: &Path, error: std::io::Error) -> StageError {
    log::warn!("request {request_id}: {}: {error}", path.display());
    StageError::internal("the file could not be read")
}

/// A multipart boundary no file is likely to hold (RFC 2046 §5.1.1).
fn boundary() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Randomness failing is no reason to refuse a file; the time is unlikely
        // enough in a file's bytes.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes[..8].copy_from_slice(&(now.as_nanos() as u64).to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("prime_server_{hex}")
}

impl HttpWork for StaticFiles {
    fn handle(&mut self, job: &mut HttpJob<'_, '_>) -> Result<Next, StageError> {
        if job.is_async() {
            return Err(StageError::bad_request(
                "files are served to requests a client waits on, not as asynchronous jobs",
            ));
        }
        let request = job.request()?.clone();
        if request.method != "GET" && request.method != "HEAD" {
            return Err(StageError::method_not_allowed(
                ALLOW,
                "files answer GET and HEAD",
            ));
        }
        let id = job.envelope().request_id;
        match path::resolve(&self.root, &request.target, &self.index) {
            Ok(Resolved::File(path)) => self.answer(job, &request, &path),
            Ok(Resolved::Redirect(location)) => Ok(Next::respond(
                Response::new(301)
                    .header("Location", location)
                    .header("Content-Type", "text/plain")
                    .body("a directory: its path ends with /\n"),
            )),
            Err(why) => {
                log::debug!("request {id}: 404: {why}");
                Err(StageError::not_found("no such file"))
            }
        }
    }

    fn selftest(&mut self) -> Result<(), String> {
        std::fs::read_dir(&self.root)
            .map(drop)
            .map_err(|e| format!("the root {} cannot be read: {e}", self.root.display()))
    }
}
