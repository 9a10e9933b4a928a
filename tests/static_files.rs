//! `prime_filed` and the `StaticFiles` stage, as a client sees them: the bytes of each
//! answer (status line, header fields, body) for GET and HEAD, other methods, index
//! files and redirects, the conditional fields of RFC 9110 §13, byte ranges (one,
//! several, none satisfiable, `If-Range`), every way out of the root, large files in
//! pieces, and a slow reader of a 2 GB file that must not make the daemon's memory grow.

mod daemons;

use daemons::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const FILED: &str = env!("CARGO_BIN_EXE_prime_filed");
/// Generous: answers here take milliseconds.
const BOUND: Duration = Duration::from_secs(20);

/// A directory tree for one test, removed at the end: `root/` is served, `secret.txt`
/// lies beside it (outside).
struct Tree {
    top: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let top = scratch_path("static-files", "d");
        std::fs::create_dir_all(top.join("root")).expect("create the root");
        std::fs::write(top.join("secret.txt"), "the secret outside the root\n").expect("secret");
        Tree { top }
    }

    fn root(&self) -> PathBuf {
        self.top.join("root")
    }

    /// Writes `bytes` to `path` under the root (directories made as needed).
    fn file(&self, path: &str, bytes: &[u8]) -> PathBuf {
        let full = self.root().join(path);
        std::fs::create_dir_all(full.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&full, bytes).expect("write a file");
        full
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.top);
    }
}

/// `prime_filed` on a free port serving `tree`, with `extra` options.
fn serve(tree: &Tree, extra: &[&str]) -> (Daemon, u16) {
    let port = free_port();
    let mut argv = vec![
        tcp(port),
        tree.root().display().to_string(),
        "2".to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    (Daemon::start_listening("filed", FILED, &argv), port)
}

/// An answer as it came off the wire.
#[derive(Debug)]
struct Answer {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn status(&self) -> u16 {
        self.status_line[9..12].parse().expect("a status code")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `METHOD target` with `fields` and `Connection: close`, and reads the whole
/// answer until the server closes.
fn exchange(port: u16, method: &str, target: &str, fields: &[&str]) -> Answer {
    exchange_version(port, method, target, fields, 1)
}

fn exchange_version(port: u16, method: &str, target: &str, fields: &[&str], minor: u8) -> Answer {
    let mut request =
        format!("{method} {target} HTTP/1.{minor}\r\nHost: test\r\nConnection: close\r\n");
    for field in fields {
        request.push_str(field);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let bytes = raw_exchange(port, request.as_bytes());
    parse_answer(&bytes)
}

/// Writes `request` and reads until the server closes (within [`BOUND`]).
fn raw_exchange(port: u16, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.write_all(request).expect("send");
    let end = Instant::now() + BOUND;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the server did not close within {BOUND:?}");
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read: {e} after {} bytes", out.len()),
        }
    }
}

fn parse_answer(bytes: &[u8]) -> Answer {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..end]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line").to_string();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(": ").expect("a field line");
            (name.to_string(), value.to_string())
        })
        .collect();
    Answer {
        status_line,
        headers,
        body: bytes[end + 4..].to_vec(),
    }
}

#[test]
fn get_and_head_answer_a_file_with_its_type_length_and_validators() {
    let tree = Tree::new();
    tree.file("a.txt", b"hello, files\n");
    tree.file("style.css", b"p{}");
    tree.file("data.unknownext", b"\x00\x01");
    let (_daemon, port) = serve(&tree, &[]);

    let get = exchange(port, "GET", "/a.txt", &[]);
    assert_eq!(get.status_line, "HTTP/1.1 200 OK");
    assert_eq!(get.header("Content-Type"), Some("text/plain"));
    assert_eq!(get.header("Content-Length"), Some("13"));
    assert_eq!(get.header("Accept-Ranges"), Some("bytes"));
    assert_eq!(get.header("Transfer-Encoding"), None);
    assert_eq!(get.header("Cache-Control"), None, "none unless configured");
    let etag = get.header("ETag").expect("an ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    let modified = get.header("Last-Modified").expect("Last-Modified");
    assert!(httpdate::parse_http_date(modified).is_ok(), "{modified}");
    assert_eq!(get.body, b"hello, files\n");

    let head = exchange(port, "HEAD", "/a.txt", &[]);
    assert_eq!(head.status_line, "HTTP/1.1 200 OK");
    assert_eq!(head.header("Content-Length"), Some("13"));
    assert_eq!(head.header("ETag"), Some(etag));
    assert!(head.body.is_empty(), "HEAD has no body: {:?}", head.body);

    let css = exchange(port, "GET", "/style.css", &[]);
    assert_eq!(css.header("Content-Type"), Some("text/css"));
    let unknown = exchange(port, "GET", "/data.unknownext", &[]);
    assert_eq!(
        unknown.header("Content-Type"),
        Some("application/octet-stream")
    );
    assert_eq!(unknown.body, b"\x00\x01");

    let missing = exchange(port, "GET", "/nope.txt", &[]);
    assert_eq!(missing.status(), 404);
    // A file named as a directory is none.
    assert_eq!(exchange(port, "GET", "/a.txt/", &[]).status(), 404);

    // Changing the file changes its ETag.
    tree.file("a.txt", b"hello, again\n");
    let changed = exchange(port, "GET", "/a.txt", &[]);
    assert_ne!(changed.header("ETag"), Some(etag));
    assert_eq!(changed.body, b"hello, again\n");
}

#[test]
fn other_methods_are_answered_405_with_allow() {
    let tree = Tree::new();
    tree.file("a.txt", b"x");
    let (_daemon, port) = serve(&tree, &[]);
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let answer = exchange(port, method, "/a.txt", &["Content-Length: 0"]);
        assert_eq!(
            answer.status_line, "HTTP/1.1 405 Method Not Allowed",
            "{method}"
        );
        assert_eq!(answer.header("Allow"), Some("GET, HEAD"), "{method}");
    }
}

#[test]
fn directories_serve_their_index_and_are_redirected_to_their_slash() {
    let tree = Tree::new();
    tree.file("index.html", b"<p>top</p>");
    tree.file("docs/index.html", b"<p>docs</p>");
    std::fs::create_dir_all(tree.root().join("empty")).expect("mkdir");
    let (_daemon, port) = serve(&tree, &[]);

    let top = exchange(port, "GET", "/", &[]);
    assert_eq!(top.status(), 200);
    assert_eq!(top.header("Content-Type"), Some("text/html"));
    assert_eq!(top.body, b"<p>top</p>");

    let docs = exchange(port, "GET", "/docs/", &[]);
    assert_eq!((docs.status(), &docs.body[..]), (200, &b"<p>docs</p>"[..]));

    let redirect = exchange(port, "GET", "/docs", &[]);
    assert_eq!(redirect.status_line, "HTTP/1.1 301 Moved Permanently");
    assert_eq!(redirect.header("Location"), Some("/docs/"));
    let with_query = exchange(port, "GET", "/docs?lang=en", &[]);
    assert_eq!(with_query.header("Location"), Some("/docs/?lang=en"));
    // Never a location another host could be read from (`//host/`).
    let doubled = exchange(port, "GET", "//docs", &[]);
    assert_eq!(doubled.header("Location"), Some("/docs/"));

    // A directory without an index is not listed.
    assert_eq!(exchange(port, "GET", "/empty/", &[]).status(), 404);
}

#[test]
fn conditional_requests_follow_rfc_9110_in_its_order() {
    let tree = Tree::new();
    tree.file("a.txt", b"conditional\n");
    let (_daemon, port) = serve(&tree, &["--cache-control", "public, max-age=60"]);
    let first = exchange(port, "GET", "/a.txt", &[]);
    assert_eq!(first.header("Cache-Control"), Some("public, max-age=60"));
    let etag = first.header("ETag").expect("ETag").to_string();
    let modified = first
        .header("Last-Modified")
        .expect("Last-Modified")
        .to_string();
    let field = |name: &str, value: &str| format!("{name}: {value}");
    let status = |fields: &[String]| {
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        exchange(port, "GET", "/a.txt", &fields).status()
    };
    let later = "Sun, 01 Jan 2090 00:00:00 GMT";
    let earlier = "Sat, 01 Jan 2000 00:00:00 GMT";

    // If-None-Match: weak comparison; 304 carries the validators and Cache-Control,
    // and no body.
    let not_modified = exchange(port, "GET", "/a.txt", &[&field("If-None-Match", &etag)]);
    assert_eq!(not_modified.status_line, "HTTP/1.1 304 Not Modified");
    assert_eq!(not_modified.header("ETag"), Some(etag.as_str()));
    assert_eq!(
        not_modified.header("Last-Modified"),
        Some(modified.as_str())
    );
    assert_eq!(
        not_modified.header("Cache-Control"),
        Some("public, max-age=60")
    );
    assert!(not_modified.body.is_empty());
    assert_eq!(status(&[field("If-None-Match", &format!("W/{etag}"))]), 304);
    assert_eq!(
        status(&[field("If-None-Match", &format!("\"other\", {etag}"))]),
        304
    );
    assert_eq!(status(&[field("If-None-Match", "*")]), 304);
    assert_eq!(status(&[field("If-None-Match", "\"other\"")]), 200);
    let head = exchange(port, "HEAD", "/a.txt", &[&field("If-None-Match", &etag)]);
    assert_eq!(head.status(), 304);

    // If-Modified-Since, only without If-None-Match (§13.1.3).
    assert_eq!(status(&[field("If-Modified-Since", &modified)]), 304);
    assert_eq!(status(&[field("If-Modified-Since", later)]), 304);
    assert_eq!(status(&[field("If-Modified-Since", earlier)]), 200);
    assert_eq!(status(&[field("If-Modified-Since", "yesterday")]), 200);
    assert_eq!(
        status(&[
            field("If-None-Match", "\"other\""),
            field("If-Modified-Since", later)
        ]),
        200,
        "If-None-Match decides, If-Modified-Since is ignored"
    );

    // If-Match: strong comparison, before everything else (412).
    assert_eq!(status(&[field("If-Match", &etag)]), 200);
    assert_eq!(status(&[field("If-Match", "*")]), 200);
    assert_eq!(status(&[field("If-Match", "\"other\"")]), 412);
    assert_eq!(status(&[field("If-Match", &format!("W/{etag}"))]), 412);
    assert_eq!(
        status(&[
            field("If-Match", "\"other\""),
            field("If-None-Match", &etag)
        ]),
        412,
        "If-Match comes first"
    );
    // If-Unmodified-Since, only without If-Match.
    assert_eq!(status(&[field("If-Unmodified-Since", earlier)]), 412);
    assert_eq!(status(&[field("If-Unmodified-Since", later)]), 200);
    assert_eq!(
        status(&[
            field("If-Match", &etag),
            field("If-Unmodified-Since", earlier)
        ]),
        200,
        "If-Unmodified-Since is ignored beside If-Match"
    );
}

/// A file of `len` bytes that differ from one offset to the next.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn ranges_are_answered_206_416_or_as_multipart_byteranges() {
    let tree = Tree::new();
    let small = pattern(1000);
    let large = pattern(3 * 1024 * 1024 + 17);
    tree.file("small.bin", &small);
    tree.file("large.bin", &large);
    let (_daemon, port) = serve(&tree, &[]);
    let get = |target: &str, fields: &[&str]| exchange(port, "GET", target, fields);

    let one = get("/small.bin", &["Range: bytes=10-19"]);
    assert_eq!(one.status_line, "HTTP/1.1 206 Partial Content");
    assert_eq!(one.header("Content-Range"), Some("bytes 10-19/1000"));
    assert_eq!(one.header("Content-Length"), Some("10"));
    assert_eq!(one.body, &small[10..20]);
    let suffix = get("/small.bin", &["Range: bytes=-5"]);
    assert_eq!(suffix.header("Content-Range"), Some("bytes 995-999/1000"));
    assert_eq!(suffix.body, &small[995..]);
    let open = get("/small.bin", &["Range: bytes=990-"]);
    assert_eq!(open.header("Content-Range"), Some("bytes 990-999/1000"));
    let clipped = get("/small.bin", &["Range: bytes=998-5000"]);
    assert_eq!(clipped.header("Content-Range"), Some("bytes 998-999/1000"));
    assert_eq!(clipped.body, &small[998..]);

    let none = get("/small.bin", &["Range: bytes=1000-"]);
    assert_eq!(none.status_line, "HTTP/1.1 416 Range Not Satisfiable");
    assert_eq!(none.header("Content-Range"), Some("bytes */1000"));

    // Another unit, or a malformed set, is ignored: the whole file.
    for ignored in ["Range: items=0-1", "Range: bytes=9-1"] {
        let whole = get("/small.bin", &[ignored]);
        assert_eq!((whole.status(), whole.body.len()), (200, 1000), "{ignored}");
    }
    // HEAD ignores Range.
    let head = exchange(port, "HEAD", "/small.bin", &["Range: bytes=0-1"]);
    assert_eq!(
        (head.status(), head.header("Content-Length")),
        (200, Some("1000"))
    );

    // If-Range: the ETag or the date must be the file's, else the whole file.
    let etag = get("/small.bin", &[])
        .header("ETag")
        .expect("ETag")
        .to_string();
    let modified = get("/small.bin", &[])
        .header("Last-Modified")
        .expect("date")
        .to_string();
    let with = |validator: &str| {
        let if_range = format!("If-Range: {validator}");
        get("/small.bin", &["Range: bytes=0-9", &if_range]).status()
    };
    assert_eq!(with(&etag), 206);
    assert_eq!(with(&modified), 206);
    assert_eq!(with("\"other\""), 200);
    assert_eq!(
        with(&format!("W/{etag}")),
        200,
        "a weak tag never matches If-Range"
    );
    assert_eq!(with("Sat, 01 Jan 2000 00:00:00 GMT"), 200);

    // Several ranges: multipart/byteranges, each part with its type and range.
    let multi = get("/small.bin", &["Range: bytes=0-3, 500-501"]);
    assert_eq!(multi.status(), 206);
    let content_type = multi.header("Content-Type").expect("a type");
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{content_type}"));
    let mut expected = Vec::new();
    for (first, last) in [(0usize, 3usize), (500, 501)] {
        expected.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {first}-{last}/1000\r\n\r\n"
            )
            .as_bytes(),
        );
        expected.extend_from_slice(&small[first..=last]);
    }
    expected.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    assert_eq!(multi.body, expected);
    assert_eq!(
        multi.header("Content-Length"),
        Some(expected.len().to_string().as_str())
    );
    // Overlapping ranges are merged into one.
    let merged = get("/small.bin", &["Range: bytes=0-9,5-19"]);
    assert_eq!(merged.header("Content-Range"), Some("bytes 0-19/1000"));

    // Ranges of a large file stream, with Content-Length.
    let part = get("/large.bin", &["Range: bytes=300000-1300000"]);
    assert_eq!(part.status(), 206);
    assert_eq!(part.header("Content-Length"), Some("1000001"));
    assert_eq!(part.header("Transfer-Encoding"), None);
    assert_eq!(part.body, &large[300_000..=1_300_000]);
    let parts = get("/large.bin", &["Range: bytes=0-99, 2000000-2999999"]);
    let body = String::from_utf8_lossy(&parts.body);
    assert!(body.contains("Content-Range: bytes 2000000-2999999/3145745"));
    let tail = &parts.body[parts.body.len() - 1_000_000 - 50..];
    assert!(
        tail.windows(1_000_000)
            .any(|w| w == &large[2_000_000..3_000_000]),
        "the second part's bytes"
    );
}

#[test]
fn nothing_outside_the_root_is_reachable() {
    let tree = Tree::new();
    tree.file("dir/inside.txt", b"inside\n");
    std::fs::create_dir_all(tree.top.join("outdir")).expect("mkdir");
    std::fs::write(tree.top.join("outdir/secret.txt"), "the secret outside\n").expect("secret");
    symlink(tree.top.join("secret.txt"), tree.root().join("link-out")).expect("symlink");
    symlink(tree.top.join("outdir"), tree.root().join("dirlink-out")).expect("symlink");
    symlink("/etc/passwd", tree.root().join("passwd")).expect("symlink");
    symlink(
        tree.root().join("dir/inside.txt"),
        tree.root().join("link-in"),
    )
    .expect("symlink");
    symlink("dir", tree.root().join("dirlink-in")).expect("symlink");
    let (_daemon, port) = serve(&tree, &[]);

    for target in [
        "/../secret.txt",
        "/dir/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/dir/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/dir%5c..%5c..%5csecret.txt",
        "/dir/inside.txt%00.png",
        "/%00",
        "/link-out",
        "/dirlink-out/secret.txt",
        "/dirlink-out/",
        "/passwd",
        "/./dir/inside.txt",
        "http://test/../secret.txt",
    ] {
        let answer = exchange(port, "GET", target, &[]);
        assert_eq!(answer.status(), 404, "{target}: {answer:?}");
        let body = String::from_utf8_lossy(&answer.body);
        assert!(
            !body.contains("secret") && !body.contains("root:"),
            "{target}: {body}"
        );
    }
    // Links that stay inside the root are followed.
    let inside = exchange(port, "GET", "/link-in", &[]);
    assert_eq!((inside.status(), &inside.body[..]), (200, &b"inside\n"[..]));
    let through = exchange(port, "GET", "/dirlink-in/inside.txt", &[]);
    assert_eq!(
        (through.status(), &through.body[..]),
        (200, &b"inside\n"[..])
    );
    // An encoded name that stays inside is found.
    tree.file("a b.txt", b"spaced\n");
    assert_eq!(exchange(port, "GET", "/a%20b.txt", &[]).body, b"spaced\n");
}

#[test]
fn a_large_file_streams_whole_with_content_length_over_http_1_1_and_1_0() {
    let tree = Tree::new();
    let large = pattern(20 * 1024 * 1024 + 3);
    tree.file("large.bin", &large);
    let (_daemon, port) = serve(&tree, &[]);
    for minor in [1, 0] {
        let answer = exchange_version(port, "GET", "/large.bin", &[], minor);
        assert_eq!(answer.status(), 200, "HTTP/1.{minor}");
        assert_eq!(answer.header("Content-Length"), Some("20971523"));
        assert_eq!(answer.header("Transfer-Encoding"), None);
        assert!(
            answer.body == large,
            "HTTP/1.{minor}: the bytes of the file"
        );
    }
    // Two in a row on one keep-alive connection: the first ended where it said.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /large.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /large.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("send");
    stream.set_read_timeout(Some(BOUND)).expect("timeout");
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("read both");
    let first = parse_answer(&all);
    let first_len = all.len() - first.body.len() + large.len();
    let second = parse_answer(&all[first_len..]);
    assert_eq!(&first.body[..large.len()], &large[..]);
    assert!(second.status() == 200 && second.body == large);
}

/// Reads exactly `n` bytes, `piece` at a time with `pause` after each.
fn read_slowly(stream: &mut TcpStream, n: usize, piece: usize, pause: Duration) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut buffer = vec![0u8; piece];
    while out.len() < n {
        let want = piece.min(n - out.len());
        let got = stream.read(&mut buffer[..want]).expect("read a piece");
        assert!(got > 0, "the server closed after {} bytes", out.len());
        out.extend_from_slice(&buffer[..got]);
        std::thread::sleep(pause);
    }
    out
}

#[test]
fn a_slow_reader_of_a_2_gb_file_keeps_the_daemons_memory_flat() {
    let tree = Tree::new();
    let big = std::fs::File::create(tree.root().join("big.bin")).expect("create");
    // Sparse: costs no disk, reads as zeros.
    big.set_len(2 * 1024 * 1024 * 1024).expect("set_len");
    tree.file("small.txt", b"warm up\n");
    let (daemon, port) = serve(&tree, &[]);
    // Warm up: threads, buffers and the first stream's piece buffer are allocated.
    assert_eq!(exchange(port, "GET", "/small.txt", &[]).status(), 200);
    let mut warm = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    warm.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    warm.set_read_timeout(Some(BOUND)).expect("timeout");
    read_slowly(&mut warm, 1024 * 1024, 64 * 1024, Duration::ZERO);
    drop(warm);
    std::thread::sleep(Duration::from_millis(300));
    let before = daemon.rss_kb();

    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    stream.set_read_timeout(Some(BOUND)).expect("timeout");
    // The head, then 48 MB read slowly: 64 KiB every 2 ms (about 30 MB/s, far below
    // what the worker reads from a sparse file).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(read_slowly(&mut stream, 1, 1, Duration::ZERO));
        assert!(
            head.len() < 4096,
            "a head: {:?}",
            String::from_utf8_lossy(&head)
        );
    }
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Length: 2147483648\r\n"), "{text}");
    let body = read_slowly(
        &mut stream,
        48 * 1024 * 1024,
        64 * 1024,
        Duration::from_millis(2),
    );
    // Then the client reads nothing for a while: an unpaced worker would pour the file
    // into the front end meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    let during = daemon.rss_kb();
    let grew_mb = during.saturating_sub(before) / 1024;
    assert!(
        grew_mb < 64,
        "RSS grew by {grew_mb} MB serving a slow reader ({before} kB before, {during} kB after)"
    );
    // The client was paced, not dropped: the file goes on where it stopped.
    let more = read_slowly(&mut stream, 8 * 1024 * 1024, 256 * 1024, Duration::ZERO);
    assert!(body.iter().chain(&more).all(|b| *b == 0));
    eprintln!("RSS: {before} kB before, {during} kB while the client paused");
}

#[test]
fn a_client_that_leaves_mid_download_frees_its_worker() {
    let tree = Tree::new();
    let big = std::fs::File::create(tree.root().join("big.bin")).expect("create");
    big.set_len(1024 * 1024 * 1024).expect("set_len");
    tree.file("small.txt", b"small\n");
    // One worker: while it waits for a client that no longer reads, nothing else runs.
    let port = free_port();
    let argv = vec![
        tcp(port),
        tree.root().display().to_string(),
        "1".to_string(),
    ];
    let daemon = Daemon::start_listening("filed", FILED, &argv);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    stream.set_read_timeout(Some(BOUND)).expect("timeout");
    // Some of it, then the client stops reading with the worker waiting on it, and goes.
    read_slowly(&mut stream, 1024 * 1024, 64 * 1024, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(500));
    drop(stream);
    let small = exchange(port, "GET", "/small.txt", &[]);
    assert_eq!((small.status(), &small.body[..]), (200, &b"small\n"[..]));
    assert!(
        daemon.stderr().contains("client-gone"),
        "{}",
        daemon.stderr()
    );
}
