//! The self-test: a probe the front end sends through every stage, and what each stage
//! reports back.
//!
//! `GET /status?selftest=1` (or the front end's `selftest_path`) sends one probe to the
//! first proxy: a job whose envelope has [`Envelope::probe`](crate::pipeline::envelope::Envelope)
//! set and whose one frame is a [`ProbePath`]. The proxy hands it to a worker like any
//! job. The worker does not run the user's function: it runs its stage's
//! [`Work::selftest`](crate::pipeline::worker::Work::selftest) (a gateway calls its backend),
//! sends the probe on to every stage it is connected to that nobody has claimed yet
//! (the stages it may route to by name, and its next stage), and reports a
//! [`StageReport`] on the loopback (`[envelope, "T", report]`, see
//! [`crate::pipeline::loopback`]). The front end gathers the reports, asks the job store to
//! check itself, and answers with one document naming every part (see
//! `server::selftest`).
//!
//! A probe tells the stages it has been sent to (`claimed`), so a worker never sends it
//! where another already has: cycles of named routes end, and each stage is probed
//! about once however the stages are wired. A probe forwarded [`MAX_HOPS`] times goes
//! no further (a cycle of unnamed next stages, which a topology cannot build but flags
//! can).

use serde::{Deserialize, Serialize};

/// How many times a probe is forwarded at most.
pub const MAX_HOPS: u32 = 32;

/// What travels with a probe: its one frame after the envelope, in JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbePath {
    /// The stages the probe has been sent to, by name: nobody sends it there again.
    pub claimed: Vec<String>,
    /// The stage that sent this copy (none: the front end sent it to the first stage).
    pub from: Option<String>,
    /// Whether it came through the sender's next stage, whose name the sender does not
    /// know (a worker given `--downstream` without a route naming it).
    pub via_next: bool,
    /// How many times the probe has been forwarded.
    pub hops: u32,
}

impl ProbePath {
    /// The frame.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a frame written by [`encode`](Self::encode); `None` for anything else.
    ///
    /// ```
    /// use prime_server::pipeline::selftest::ProbePath;
    /// let path = ProbePath { claimed: vec!["parse".into()], hops: 1, ..ProbePath::default() };
    /// assert_eq!(ProbePath::decode(&path.encode()), Some(path));
    /// assert_eq!(ProbePath::decode(b"nonsense"), None);
    /// ```
    pub fn decode(frame: &[u8]) -> Option<ProbePath> {
        serde_json::from_slice(frame).ok()
    }
}

/// What one worker found when a probe reached it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageReport {
    /// The stage's name (the worker pool's name).
    pub stage: String,
    /// The worker's id at its proxy.
    pub worker: String,
    /// Whether the stage's self-test passed.
    pub ok: bool,
    /// Why it failed, when it did (e.g. "the backend http://127.0.0.1:9 refused the
    /// connection").
    pub error: Option<String>,
    /// The stage the probe came from (none: from the front end).
    pub from: Option<String>,
    /// Whether it came through `from`'s unnamed next stage.
    pub via_next: bool,
    /// The named stages this worker sent the probe on to.
    pub forwarded: Vec<String>,
    /// Whether it sent the probe on to a next stage it knows by endpoint only.
    pub next: bool,
}

impl StageReport {
    /// The loopback payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a payload written by [`encode`](Self::encode).
    pub fn decode(payload: &[u8]) -> Option<StageReport> {
        serde_json::from_slice(payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_refuse_garbage() {
        let report = StageReport {
            stage: "gateway".into(),
            worker: "gateway-1-0".into(),
            ok: false,
            error: Some("the backend refused the connection".into()),
            from: Some("dispatch".into()),
            via_next: false,
            forwarded: vec!["slow".into()],
            next: true,
        };
        assert_eq!(StageReport::decode(&report.encode()), Some(report));
        assert_eq!(StageReport::decode(b"{}"), None);
        assert_eq!(ProbePath::decode(b""), None);
    }
}
