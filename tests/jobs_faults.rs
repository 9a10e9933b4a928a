//! The job store under real faults of its filesystem: a small tmpfs mounted for the test
//! and filled until writes fail. Skipped, with the reason printed, where the machine
//! does not let the test mount one (it needs root).

mod daemons;

use daemons::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SERVERD: &str = env!("CARGO_BIN_EXE_prime_serverd");
const READ: Duration = Duration::from_secs(60);

/// A tmpfs of a few MiB mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// `None` (with the reason printed) where mounting is not allowed.
    fn mount(stem: &str, mebibytes: u32) -> Option<SmallDisk> {
        let dir = scratch_path(stem, "mnt");
        std::fs::create_dir_all(&dir).expect("a mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={mebibytes}m,mode=0700"))
            .arg("tmpfs")
            .arg(&dir)
            .output();
        match output {
            Ok(out) if out.status.success() => Some(SmallDisk { dir }),
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a file until the filesystem is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path("filler");
        let mut file = std::fs::File::create(&path).expect("a filler file");
        let block = vec![0u8; 64 * 1024];
        // Bounded: the filesystem is a few MiB.
        for _ in 0..100_000 {
            if file
                .write_all(&block)
                .and_then(|()| file.sync_all())
                .is_err()
            {
                return path;
            }
        }
        panic!("{} never filled up", self.dir.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn start_serverd(name: &str, port: u16, db: &Path) -> Daemon {
    let args = args(&[
        &tcp(port),
        "2",
        "--jobs-db",
        &db.display().to_string(),
        "--status-path",
        "/status",
    ]);
    Daemon::start_listening(name, SERVERD, &args)
}

fn job_status(port: u16, location: &str) -> serde_json::Value {
    get(port, location, READ).expect("a status answer").json()
}

/// A run that ends while the disk is full: the commit recording its end fails and is
/// rolled back, so the store still calls it `running` although nothing runs it. Once the
/// disk has room again the job is settled (queued and run again here), instead of
/// staying `running` until a restart.
#[test]
fn a_run_whose_end_a_full_disk_lost_is_settled_once_it_has_room() {
    let Some(disk) = SmallDisk::mount("full-disk", 8) else {
        return;
    };
    let db = disk.path("jobs.sqlite");
    let port = free_port();
    let mut server = start_serverd("serverd-full-disk", port, &db);
    let mut client = Client::connect(port).expect("connect");
    client
        .send_request("GET", &is_prime(PRIME_2_61), &["Prefer: respond-async"])
        .expect("send");
    let location = location_of(&client.read_response(READ).expect("a 202"));
    let running = poll_until(READ, || {
        let status = job_status(port, &location);
        (status["state"] == "running").then_some(status)
    });
    assert!(running.is_some(), "the job never ran");

    // The disk fills while the job runs; its end cannot be committed.
    let filler = disk.fill();
    assert!(
        server.wait_for_log("a commit failed", READ),
        "no commit failed on the full disk: {}",
        server.stderr()
    );
    let answered = poll_until(READ, || {
        let status = get(port, "/status", READ).expect("status").json();
        (status["jobs"]["in_pipeline"] == 0).then_some(())
    });
    assert!(answered.is_some(), "the run never ended");

    std::fs::remove_file(&filler).expect("room again");
    let ended = poll_until(Duration::from_secs(120), || {
        let status = job_status(port, &location);
        matches!(status["state"].as_str(), Some("succeeded" | "failed")).then_some(status)
    })
    .expect("the job ended after the disk had room again");
    assert_eq!(ended["state"], "succeeded", "{ended}");
    assert_eq!(ended["attempts"], 2, "{ended}");
    assert!(server
        .stderr()
        .contains("was left running by a failed commit"));
    let result = get(port, &format!("{location}/result"), READ).expect("a result");
    assert_eq!(result.possible_prime(), Some(PRIME_2_61));
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
}

/// An ext4 filesystem on a loop device, frozen (`fsfreeze`) on demand: writes to it
/// wait until it thaws, as on a stalled disk. Thawed and unmounted when dropped.
struct FreezableDisk {
    dir: PathBuf,
    image: PathBuf,
}

impl FreezableDisk {
    /// `None` (with the reason printed) where the machine does not allow it.
    fn mount(stem: &str) -> Option<FreezableDisk> {
        let dir = scratch_path(stem, "mnt");
        let image = scratch_path(stem, "img");
        std::fs::create_dir_all(&dir).expect("a mount point");
        let steps: [(&str, Vec<String>); 3] = [
            (
                "truncate",
                vec!["-s".into(), "64M".into(), image.display().to_string()],
            ),
            (
                "mkfs.ext4",
                vec!["-q".into(), "-F".into(), image.display().to_string()],
            ),
            (
                "mount",
                vec![
                    "-o".into(),
                    "loop".into(),
                    image.display().to_string(),
                    dir.display().to_string(),
                ],
            ),
        ];
        for (program, args) in steps {
            match Command::new(program).args(&args).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    eprintln!(
                        "skipped: {program} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                    let _ = std::fs::remove_file(&image);
                    return None;
                }
                Err(e) => {
                    eprintln!("skipped: cannot run {program}: {e}");
                    let _ = std::fs::remove_file(&image);
                    return None;
                }
            }
        }
        Some(FreezableDisk { dir, image })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn freeze(&self, frozen: bool) {
        let flag = if frozen { "-f" } else { "-u" };
        let status = Command::new("fsfreeze")
            .arg(flag)
            .arg(&self.dir)
            .status()
            .expect("fsfreeze runs");
        assert!(status.success(), "fsfreeze {flag} failed");
    }
}

/// Thaws a frozen disk when dropped. Declared after the server, it is dropped before
/// it: a process blocked on a frozen filesystem cannot be killed until it thaws.
struct ThawOnDrop<'d>(&'d FreezableDisk);

impl Drop for ThawOnDrop<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.0.dir).output();
    }
}

impl Drop for FreezableDisk {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.dir).output();
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_file(&self.image);
    }
}

/// While the disk stalls (frozen under a commit), a read of a finished job does not
/// wait past the request timeout: it is answered `503` with `Retry-After`, and once the
/// disk thaws the store answers again.
#[test]
fn job_reads_behind_a_stalled_disk_are_503_within_the_request_timeout() {
    let Some(disk) = FreezableDisk::mount("stalled-disk") else {
        return;
    };
    let db = disk.path("jobs.sqlite");
    let port = free_port();
    let args = args(&[
        &tcp(port),
        "2",
        "--jobs-db",
        &db.display().to_string(),
        "--request-timeout",
        "2",
    ]);
    let mut server = Daemon::start_listening("serverd-stalled-disk", SERVERD, &args);
    let _thaw = ThawOnDrop(&disk);
    let mut client = Client::connect(port).expect("connect");
    client
        .send_request("GET", &is_prime(7), &["Prefer: respond-async"])
        .expect("send");
    let finished = location_of(&client.read_response(READ).expect("a 202"));
    let ended = poll_until(READ, || {
        let status = job_status(port, &finished);
        (status["state"] == "succeeded").then_some(())
    });
    assert!(ended.is_some(), "the first job never ended");

    // The disk stalls; a submit's commit now waits on it, and the store with it.
    disk.freeze(true);
    let mut submitter = Client::connect(port).expect("connect");
    submitter
        .send_request("GET", &is_prime(11), &["Prefer: respond-async"])
        .expect("send");
    let mut reader = Client::connect(port).expect("connect");
    reader
        .send_request("GET", &format!("{finished}/result"), &[])
        .expect("send");
    let read = reader
        .read_response(READ)
        .expect("an answer while the disk stalls");
    assert_eq!(read.status, 503, "{read:?}");
    assert!(read.header("Retry-After").is_some(), "{read:?}");
    assert!(read.body.contains("did not answer in time"), "{read:?}");

    disk.freeze(false);
    let accepted = submitter.read_response(READ).expect("the submit's answer");
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let result = get(port, &format!("{finished}/result"), READ).expect("a result");
    assert_eq!(result.status, 200, "{result:?}");
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
}
