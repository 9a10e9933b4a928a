//! The other front ends' changes, heard with `LISTEN prime_jobs` on a connection of
//! its own.

use super::super::Durability;
use super::schema::{connect, CHANNEL};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A change another front end made, as [`listen`] hands it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Job `number` changed (state or events).
    Changed(u64),
    /// Notices may have been lost (the listening connection was made again): check
    /// every job this front end watches.
    Resync,
}

/// Listens for the changes other front ends make to the store at `url`, on a thread
/// of its own with its own connection, and hands each to `deliver` (which returns false
/// to stop). `own` is this front end's id: its own changes are not handed on. A lost
/// connection is made again (each second), followed by [`Notice::Resync`].
///
/// Errors: the thread cannot start.
pub fn listen(
    url: &str,
    own: &str,
    stop: Arc<AtomicBool>,
    mut deliver: impl FnMut(Notice) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let url = url.to_string();
    let own = own.to_string();
    std::thread::Builder::new()
        .name("job-notices".into())
        .spawn(move || {
            let mut first = true;
            while !stop.load(Ordering::Relaxed) {
                let mut db = match connect(&url, &format!("{own}-listen"), Durability::Process)
                    .and_then(|mut db| {
                        db.batch_execute(&format!("LISTEN {CHANNEL}"))?;
                        Ok(db)
                    }) {
                    Ok(db) => db,
                    Err(e) => {
                        log::warn!("jobs: the store's change notices are not heard: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                };
                if !std::mem::take(&mut first) && !deliver(Notice::Resync) {
                    return;
                }
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    use ::postgres::fallible_iterator::FallibleIterator;
                    // A new iterator each time: one whose wait has run out answers at
                    // once from then on.
                    let next = db
                        .notifications()
                        .timeout_iter(Duration::from_millis(200))
                        .next();
                    match next {
                        Ok(Some(notice)) => {
                            let mut words = notice.payload().split(' ');
                            let number = words.next().and_then(|n| n.parse::<u64>().ok());
                            let by = words.next().unwrap_or("");
                            if let Some(number) = number {
                                if by != own && !deliver(Notice::Changed(number)) {
                                    return;
                                }
                            }
                        }
                        Ok(None) if db.is_closed() => {
                            log::warn!("jobs: the store's change notices were cut");
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            log::warn!("jobs: the store's change notices were cut: {e}");
                            break;
                        }
                    }
                }
            }
        })
}
