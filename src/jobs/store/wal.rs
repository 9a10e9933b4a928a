//! A look at the SQLite store's write-ahead log before SQLite opens it, so that a
//! restart says what it drops instead of starting as if nothing happened.
//!
//! After a crash SQLite replays the `-wal` file up to its last intact commit and drops
//! the rest without a word. The rest is of two kinds: a transaction the crash cut off
//! before its commit frame (nothing in it was acknowledged: every `202` waits for its
//! commit), and frames that were committed but are now damaged (a torn write, a
//! truncated or altered file), which lose jobs that were acknowledged. This module reads
//! the log as SQLite's file format defines it (sqlite.org/fileformat2.html, "The
//! Write-Ahead Log") and counts both.
//!
//! The format: a 32-byte header (magic `0x377f0682` or `0x377f0683`, version, page size,
//! checkpoint sequence, two salts, a checksum of the first 24 bytes), then frames of a
//! 24-byte header (page number, the database size for a commit frame or 0, the two salts,
//! a checksum) and one page. A frame is intact when its salts are the header's and its
//! checksum, which runs on from the previous frame's over the frame header's first 8
//! bytes and the page, matches. SQLite reuses the file after a checkpoint without
//! truncating it, so frames of an earlier generation (other salts) may follow the
//! current ones: they are left over, not lost, and are not counted.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The magic number whose checksums read words little-endian.
const MAGIC_LE: u32 = 0x377f_0682;
/// The magic number whose checksums read words big-endian.
const MAGIC_BE: u32 = 0x377f_0683;
const HEADER_LEN: usize = 32;
const FRAME_HEADER_LEN: usize = 24;

/// What a restart will drop from a write-ahead log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalReport {
    /// Frames of the log's current generation that SQLite will replay (up to and
    /// including the last intact commit frame).
    pub replayed: u64,
    /// Frames of the current generation after the last intact commit: SQLite drops
    /// them.
    pub dropped: u64,
    /// How many of the dropped frames are damaged (a checksum that does not match, or a
    /// frame cut short at the end of the file), rather than an uncommitted transaction
    /// cut off whole. Above 0, committed (acknowledged) work is lost.
    pub damaged: u64,
    /// The header itself is unreadable: SQLite ignores the whole file.
    pub header_damaged: bool,
}

impl WalReport {
    /// Whether acknowledged work is lost.
    pub fn lost_committed_work(&self) -> bool {
        self.damaged > 0 || self.header_damaged
    }
}

/// Reads the write-ahead log at `wal` (the database's path with `-wal`). `Ok(None)` when
/// there is no log or it is empty. Errors are the file's read errors.
pub fn inspect(wal: &Path) -> io::Result<Option<WalReport>> {
    let mut file = match File::open(wal) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(&mut file, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    let word = |bytes: &[u8], at: usize| {
        u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    };
    let magic = word(&header, 0);
    let page_size = word(&header, 8) as usize;
    let big_endian = magic == MAGIC_BE;
    let header_ok = got == HEADER_LEN
        && (magic == MAGIC_LE || magic == MAGIC_BE)
        && page_size.is_power_of_two()
        && (512..=65_536).contains(&page_size)
        && checksum((0, 0), &header[..24], big_endian) == (word(&header, 24), word(&header, 28));
    if !header_ok {
        // Nothing in the file is replayed. Without a page size the frames cannot be
        // counted; a frame of the default 4 KiB page stands for them.
        let rest = file.metadata()?.len().saturating_sub(HEADER_LEN as u64);
        let frames = rest.div_ceil((FRAME_HEADER_LEN + 4096) as u64);
        return Ok(Some(WalReport {
            dropped: frames,
            damaged: frames,
            header_damaged: true,
            ..WalReport::default()
        }));
    }
    let salts = (word(&header, 16), word(&header, 20));
    let mut sum = (word(&header, 24), word(&header, 28));
    let mut frame = vec![0u8; FRAME_HEADER_LEN + page_size];
    let mut report = WalReport::default();
    // Frames read since the last intact commit frame, and whether they were all intact.
    let mut since_commit = 0u64;
    let mut intact = true;
    loop {
        let got = read_full(&mut file, &mut frame)?;
        if got == 0 {
            break;
        }
        if got < frame.len() {
            // A frame cut short: the file was truncated or its last write torn.
            report.damaged += 1;
            since_commit += 1;
            break;
        }
        if (word(&frame, 8), word(&frame, 12)) != salts {
            // A frame of an earlier generation: the current log ended before it.
            break;
        }
        since_commit += 1;
        if intact {
            let next = checksum(sum, &frame[..8], big_endian);
            let next = checksum(next, &frame[FRAME_HEADER_LEN..], big_endian);
            if next == (word(&frame, 16), word(&frame, 20)) {
                sum = next;
                if word(&frame, 4) != 0 {
                    report.replayed += since_commit;
                    since_commit = 0;
                }
                continue;
            }
            intact = false;
        }
        report.damaged += 1;
    }
    report.dropped = since_commit;
    Ok(Some(report))
}

/// Says what SQLite is about to drop from the store's write-ahead log :
/// a warning when committed (acknowledged) work is lost, a note when only a transaction
/// the crash cut off is. Called before SQLite opens the file, which replays the log
/// silently.
pub(super) fn report_before_open(path: &Path) {
    let mut wal_path = path.as_os_str().to_owned();
    wal_path.push("-wal");
    let wal_path = Path::new(&wal_path);
    match inspect(wal_path) {
        Ok(Some(report)) if report.lost_committed_work() => log::warn!(
            "job store {}: its write-ahead log is damaged{}: {} frames after the last intact commit are dropped ({} damaged; {} replayed); what they committed (accepted jobs, their later states) is lost",
            path.display(),
            if report.header_damaged { " (its header)" } else { "" },
            report.dropped,
            report.damaged,
            report.replayed,
        ),
        Ok(Some(report)) if report.dropped > 0 => log::info!(
            "job store {}: {} frames of a transaction cut off before its commit are dropped (nothing in it was acknowledged); {} replayed",
            path.display(),
            report.dropped,
            report.replayed,
        ),
        Ok(_) => {}
        Err(e) => log::warn!(
            "job store {}: its write-ahead log could not be read before opening: {e}",
            path.display()
        ),
    }
}

/// SQLite's WAL checksum, running on from `(s1, s2)` over `bytes` (a multiple of 8
/// bytes) read as pairs of 32-bit words in the log's byte order.
fn checksum((mut s1, mut s2): (u32, u32), bytes: &[u8], big_endian: bool) -> (u32, u32) {
    for pair in bytes.chunks_exact(8) {
        let read = |b: &[u8]| {
            let b = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        s1 = s1.wrapping_add(read(&pair[..4])).wrapping_add(s2);
        s2 = s2.wrapping_add(read(&pair[4..])).wrapping_add(s1);
    }
    (s1, s2)
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// A real SQLite database in WAL mode with `transactions` committed and not yet
    /// checkpointed; returns a copy of its `-wal` file, taken while the connection is
    /// open (closing it would checkpoint and remove the log).
    fn real_wal(name: &str, transactions: usize) -> (std::path::PathBuf, Vec<u8>) {
        real_wal_of(name, transactions, 3000)
    }

    /// As [`real_wal`], each transaction inserting a blob of `blob` bytes (over a page,
    /// a transaction writes several frames).
    fn real_wal_of(name: &str, transactions: usize, blob: usize) -> (std::path::PathBuf, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("prime-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let db_path = dir.join("jobs.sqlite");
        let db = Connection::open(&db_path).expect("a database");
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (n INTEGER, payload BLOB);",
        )
        .expect("WAL mode and a table");
        for n in 0..transactions {
            db.execute(
                "INSERT INTO t VALUES (?1, zeroblob(?2))",
                [n as i64, blob as i64],
            )
            .expect("an insert");
        }
        let wal = std::fs::read(dir.join("jobs.sqlite-wal")).expect("the -wal file");
        drop(db);
        (dir, wal)
    }

    fn inspect_bytes(dir: &Path, bytes: &[u8]) -> Option<WalReport> {
        let path = dir.join("copy-wal");
        std::fs::write(&path, bytes).expect("a copy of the log");
        inspect(&path).expect("a readable copy")
    }

    fn frame_len(wal: &[u8]) -> usize {
        FRAME_HEADER_LEN + u32::from_be_bytes([wal[8], wal[9], wal[10], wal[11]]) as usize
    }

    #[test]
    fn an_intact_log_drops_nothing() {
        let (dir, wal) = real_wal("intact", 5);
        let report = inspect_bytes(&dir, &wal).expect("a log");
        assert!(report.replayed >= 5, "{report:?}");
        assert_eq!((report.dropped, report.damaged), (0, 0), "{report:?}");
        assert!(!report.lost_committed_work());
    }

    #[test]
    fn a_damaged_frame_drops_it_and_every_later_one() {
        let (dir, mut wal) = real_wal("damaged", 6);
        let intact = inspect_bytes(&dir, &wal).expect("a log");
        let frames = (wal.len() - HEADER_LEN) / frame_len(&wal);
        // A byte in the page of the third frame from the end.
        let at = HEADER_LEN + (frames - 3) * frame_len(&wal) + FRAME_HEADER_LEN + 100;
        wal[at] ^= 0xff;
        let report = inspect_bytes(&dir, &wal).expect("a log");
        assert_eq!(report.dropped, 3, "{report:?}");
        assert_eq!(report.damaged, 3, "{report:?}");
        assert_eq!(report.replayed, intact.replayed - 3);
        assert!(report.lost_committed_work());
    }

    #[test]
    fn a_log_cut_inside_its_last_frame_says_so() {
        let (dir, wal) = real_wal("cut", 4);
        let cut = wal.len() - frame_len(&wal) / 2;
        let report = inspect_bytes(&dir, &wal[..cut]).expect("a log");
        assert_eq!(report.damaged, 1, "{report:?}");
        assert!(report.dropped >= 1, "{report:?}");
        assert!(report.lost_committed_work());
    }

    #[test]
    fn an_uncommitted_tail_is_dropped_but_not_damaged() {
        // Each transaction writes a blob of five pages, so several frames; without its
        // last frame (the commit frame) the last one is a transaction a crash cut off
        // between its frames: dropped whole, nothing damaged.
        let (dir, wal) = real_wal_of("tail", 3, 5 * 4096);
        let frames = (wal.len() - HEADER_LEN) / frame_len(&wal);
        let torn = &wal[..HEADER_LEN + (frames - 1) * frame_len(&wal)];
        let report = inspect_bytes(&dir, torn).expect("a log");
        assert!(report.dropped >= 4, "{report:?}");
        assert_eq!(report.damaged, 0, "{report:?}");
        assert!(!report.lost_committed_work());
    }

    #[test]
    fn no_log_and_a_bad_header_are_told_apart() {
        let (dir, mut wal) = real_wal("header", 2);
        assert_eq!(inspect(&dir.join("none-wal")).expect("no file"), None);
        assert_eq!(inspect_bytes(&dir, &[]), None);
        wal[24] ^= 1;
        let report = inspect_bytes(&dir, &wal).expect("a log");
        assert!(
            report.header_damaged && report.lost_committed_work(),
            "{report:?}"
        );
    }
}
