//! Cross-origin resource sharing (CORS), answered by the front end so that a page on
//! another origin can call the pipeline and follow its asynchronous jobs.
//!
//! With [`ServerConfig::cors`](super::ServerConfig::cors) set:
//! - a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is
//!   answered `204` by the front end: for an allowed origin with
//!   `Access-Control-Allow-Origin`, `-Allow-Methods`, `-Allow-Headers`, `-Max-Age` (and
//!   `-Allow-Credentials`), for any other origin with none of them, which the browser
//!   takes as a refusal;
//! - any other request from an allowed origin has `Access-Control-Allow-Origin`,
//!   `Vary: Origin` and `Access-Control-Expose-Headers: Location, Retry-After` added to
//!   its answer, whoever made it (a worker, the job service or the front end, including
//!   its refusals of a request it could not read: `400`, `408`, `413`, `431`, which
//!   take the `Origin` from as much of the head as arrived), so a script can read
//!   where its job went and when to look again, or why it was refused;
//! - every answer carries `Vary: Origin`, whatever its origin (or none), so a cache
//!   never gives one origin's answer to another.
//!
//! With credentials allowed, the listed origin is echoed (browsers refuse `*` with
//! credentials); `*` with credentials is refused at start ([`CorsConfig::check`]): the
//! Fetch standard forbids it, and echoing every origin would hand every site the
//! user's cookies. Unconfigured, nothing here runs: the front end checks one `Option`
//! per request.

use super::output::AnswerBytes;
use super::Server;
use crate::http::field_text;
use crate::http::{Method, ParsedRequest, Response};
use std::time::Duration;

/// The response fields a script may read besides the safelisted ones.
const EXPOSED: &str = "Location, Retry-After";

/// What every answer gets when CORS is configured and the origin is not allowed (or
/// absent): the answer still depends on `Origin`, so caches must key on it.
const VARY_ONLY: &[u8] = b"Vary: Origin\r\n";

/// Which origins may call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`--cors-origin '*'`).
    Any,
    /// These origins exactly, e.g. `https://app.example.com` (compared without regard
    /// to ASCII case).
    List(Vec<String>),
}

/// The CORS policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsConfig {
    /// Which origins may call.
    pub origins: AllowedOrigins,
    /// The methods a preflight allows (`GET, HEAD, POST, DELETE, OPTIONS` by default).
    pub methods: Vec<String>,
    /// The request fields a preflight allows (`Content-Type, Prefer, Idempotency-Key,
    /// Callback-URL` by default).
    pub headers: Vec<String>,
    /// How long a browser may cache a preflight's answer (`Access-Control-Max-Age`).
    pub max_age: Option<Duration>,
    /// Whether requests may carry credentials (cookies, `Authorization`): then the
    /// origin is echoed, never `*`.
    pub credentials: bool,
}

impl CorsConfig {
    /// The policy for these origins (`*` for any), with the default methods and
    /// headers, a 10-minute preflight cache, and no credentials.
    ///
    /// ```
    /// use prime_server::server::CorsConfig;
    /// let cors = CorsConfig::new(["https://app.example"]);
    /// assert_eq!(cors.allow_origin("https://app.example").as_deref(), Some("https://app.example"));
    /// assert_eq!(cors.allow_origin("https://evil.example"), None);
    /// assert_eq!(CorsConfig::new(["*"]).allow_origin("https://x.example").as_deref(), Some("*"));
    /// ```
    pub fn new<S: Into<String>>(origins: impl IntoIterator<Item = S>) -> Self {
        let origins: Vec<String> = origins.into_iter().map(Into::into).collect();
        CorsConfig {
            origins: if origins.iter().any(|o| o == "*") {
                AllowedOrigins::Any
            } else {
                AllowedOrigins::List(origins)
            },
            methods: ["GET", "HEAD", "POST", "DELETE", "OPTIONS"]
                .map(String::from)
                .to_vec(),
            headers: ["Content-Type", "Prefer", "Idempotency-Key", "Callback-URL"]
                .map(String::from)
                .to_vec(),
            max_age: Some(Duration::from_secs(600)),
            credentials: false,
        }
    }

    /// Refuses a policy that cannot be served safely: any origin (`*`) with
    /// credentials. The Fetch standard forbids `Access-Control-Allow-Origin: *` with
    /// credentials, and echoing every origin instead would let every site read answers
    /// made with the user's cookies.
    ///
    /// # Errors
    /// A message naming the conflict, for the operator.
    ///
    /// ```
    /// use prime_server::server::CorsConfig;
    /// let mut cors = CorsConfig::new(["*"]);
    /// assert!(cors.check().is_ok());
    /// cors.credentials = true;
    /// assert!(cors.check().is_err());
    /// ```
    pub fn check(&self) -> Result<(), String> {
        if self.credentials && self.origins == AllowedOrigins::Any {
            return Err(
                "CORS with any origin (*) cannot allow credentials: the Fetch standard \
                 forbids it, and echoing every origin would give every site the user's \
                 cookies; list the origins that may send credentials"
                    .into(),
            );
        }
        Ok(())
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, or `None`
    /// when the origin is not allowed.
    pub fn allow_origin(&self, origin: &str) -> Option<String> {
        // An origin is visible ASCII; anything else is never echoed into a response.
        if origin.is_empty() || !origin.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        match &self.origins {
            // With credentials this policy is refused at start (`check`).
            AllowedOrigins::Any => Some("*".to_string()),
            AllowedOrigins::List(list) => list
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
                .then(|| origin.to_string()),
        }
    }

    /// The fields added to an answer for an allowed origin, as header lines.
    fn answer_fields(&self, allow: &str) -> Box<[u8]> {
        let mut fields = format!(
            "Access-Control-Allow-Origin: {allow}\r\nVary: Origin\r\nAccess-Control-Expose-Headers: {EXPOSED}\r\n"
        );
        if self.credentials {
            fields.push_str("Access-Control-Allow-Credentials: true\r\n");
        }
        fields.into_bytes().into_boxed_slice()
    }

    /// The header lines an answer to a request from `origin` gets: the CORS fields for
    /// an allowed origin, else `Vary: Origin` alone.
    pub(super) fn fields_for(&self, origin: Option<&str>) -> Box<[u8]> {
        match origin.and_then(|o| self.allow_origin(o)) {
            Some(allow) => self.answer_fields(&allow),
            None => VARY_ONLY.into(),
        }
    }

    /// The `204` answer to a preflight from `origin`.
    fn preflight(&self, origin: &str) -> Response {
        let response = Response::new(204).header("Vary", "Origin");
        let Some(allow) = self.allow_origin(origin) else {
            return response;
        };
        let mut response = response
            .header("Access-Control-Allow-Origin", allow)
            .header("Access-Control-Allow-Methods", self.methods.join(", "))
            .header("Access-Control-Allow-Headers", self.headers.join(", "));
        if let Some(age) = self.max_age {
            response = response.header("Access-Control-Max-Age", age.as_secs().to_string());
        }
        if self.credentials {
            response = response.header("Access-Control-Allow-Credentials", "true");
        }
        response
    }
}

/// What CORS makes of a request.
pub(super) enum CorsAction {
    /// A preflight: answer this at once.
    Preflight(Response),
    /// Any other request: add these header lines to its answer (the CORS fields for an
    /// allowed origin, else `Vary: Origin`).
    Decorate(Box<[u8]>),
}

/// What the policy says about `request`.
pub(super) fn classify(config: &CorsConfig, request: &ParsedRequest) -> CorsAction {
    let origin = field_text(&request.head, "origin");
    match origin {
        Some(origin)
            if request.method == Method::Options
                && field_text(&request.head, "access-control-request-method").is_some() =>
        {
            CorsAction::Preflight(config.preflight(origin))
        }
        _ => CorsAction::Decorate(config.fields_for(origin)),
    }
}

/// `OPTIONS *`: what the server as a whole allows.
pub(super) fn options_star() -> Response {
    Response::new(200).header("Allow", "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS")
}

/// The header lines the front end's own answer to a request it could not read gets
/// (`400`, `408`, `413`, `431`, ...), from the `Origin` in as much of its head as
/// arrived; `None` without CORS.
pub(super) fn refusal_fields(
    config: Option<&CorsConfig>,
    origin: Option<&str>,
) -> Option<Box<[u8]>> {
    config.map(|c| c.fields_for(origin))
}

impl Server {
    /// Answers what the front end answers itself (`OPTIONS *`, a CORS preflight) and
    /// returns true; or notes the CORS fields the request's answer gets, and returns
    /// false.
    pub(super) fn answer_cors(&mut self, id: u64, request: &ParsedRequest) -> bool {
        let response = if request.method == Method::Options && request.target_str() == "*" {
            let response = options_star();
            match self.config.cors {
                Some(_) => response.header("Vary", "Origin"),
                None => response,
            }
        } else {
            match self.config.cors.as_ref().map(|c| classify(c, request)) {
                Some(CorsAction::Preflight(response)) => response,
                Some(CorsAction::Decorate(fields)) => {
                    self.cors_fields = Some(fields);
                    return false;
                }
                None => return false,
            }
        };
        let label = self.access.enabled().then(|| request.request_line().into());
        let close_after = !request.keep_alive;
        let bytes = response.to_bytes(request.minor_version, !close_after, false);
        self.answer_now(id, bytes, close_after, label);
        true
    }
}

/// An answer with the CORS fields of its slot, if it has any.
pub(super) fn decorate(answer: AnswerBytes, fields: Option<&[u8]>) -> AnswerBytes {
    let Some(fields) = fields else {
        return answer;
    };
    match with_fields(answer.as_slice(), fields) {
        Some(bytes) => AnswerBytes::Owned(bytes),
        None => answer,
    }
}

/// An HTTP answer with `fields` (whole header lines) inserted after its status line,
/// unless it already has `Access-Control-Allow-Origin` (the stage set its own).
pub(super) fn with_fields(answer: &[u8], fields: &[u8]) -> Option<Vec<u8>> {
    let line_end = answer.windows(2).position(|w| w == b"\r\n")? + 2;
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |at| at + 4);
    let has_own = answer[..head_end].split(|&b| b == b'\n').any(|line| {
        line.len() > 28 && line[..28].eq_ignore_ascii_case(b"access-control-allow-origin:")
    });
    if has_own {
        return None;
    }
    let mut out = Vec::with_capacity(answer.len() + fields.len());
    out.extend_from_slice(&answer[..line_end]);
    out.extend_from_slice(fields);
    out.extend_from_slice(&answer[line_end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_go_after_the_status_line() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let out = with_fields(answer, b"Vary: Origin\r\n").unwrap();
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nVary: Origin\r\nContent-Length: 2\r\n\r\nok".to_vec()
        );
        let own = b"HTTP/1.1 200 OK\r\naccess-control-allow-origin: *\r\n\r\n";
        assert_eq!(with_fields(own, b"Vary: Origin\r\n"), None);
    }

    #[test]
    fn credentials_echo_the_origin_and_odd_origins_are_refused() {
        let mut cors = CorsConfig::new(["https://a.example"]);
        cors.credentials = true;
        assert_eq!(
            cors.allow_origin("https://a.example").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(&*cors.fields_for(Some("https://b.example")), VARY_ONLY);
        assert_eq!(&*cors.fields_for(None), VARY_ONLY);
        assert_eq!(cors.allow_origin("https://a.example\tx"), None);
        assert_eq!(cors.allow_origin(""), None);
    }
}
