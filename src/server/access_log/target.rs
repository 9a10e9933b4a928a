//! A request's target as the access log writes it: a job id under the jobs' path as
//! its tag, the value of a query parameter with a secret's name as `REDACTED` (see the
//! access log's documentation), and the usual target, with nothing to hide, found in
//! one pass so that its line is copied whole.

use crate::jobs::tag::job_tag;

/// Words that mark a query parameter's name as a secret's: its value is not logged.
pub(super) const SECRET_NAMES: [&[u8]; 9] = [
    b"token",
    b"key",
    b"secret",
    b"passw",
    b"pwd",
    b"sig",
    b"auth",
    b"credential",
    b"session",
];

/// Whether the target at the start of `rest` (it runs to the first space) is logged
/// as it is by [`put_target`]: it does not start with the jobs' path, and no query
/// parameter has a secret's name. One pass over the query's bytes, which checks each
/// name once, where `put_target` would copy the target piece by piece. A target equal
/// to the jobs' path says false too: `put_target` then decides.
pub(super) fn logs_as_it_is(rest: &[u8], jobs_prefix: Option<&[u8]>) -> bool {
    if jobs_prefix.is_some_and(|prefix| rest.starts_with(prefix)) {
        return false;
    }
    let query = match memchr::memchr2(b'?', b' ', rest) {
        Some(mark) if rest[mark] == b'?' => &rest[mark + 1..],
        _ => return true,
    };
    // The usual query holds no secret's letters at all: then no name in it can hold a
    // secret, which one fold over its bytes tells (the per-name pass below costs
    // about twice as much).
    let end = memchr::memchr(b' ', query).unwrap_or(query.len());
    if !may_hold_secret(letters(&query[..end])) {
        return true;
    }
    // Where the current parameter starts, whether its name was checked (its first
    // `=` seen: a parameter without `=` is copied as it is), and the [`letters`] seen
    // since it started, gathered in the same pass.
    let mut start = 0;
    let mut named = false;
    let mut seen = 0u32;
    for (at, &byte) in query.iter().enumerate() {
        match byte {
            b' ' => break,
            b'&' => {
                start = at + 1;
                named = false;
                seen = 0;
            }
            b'=' if !named => {
                if may_hold_secret(seen) && holds_secret_word(&query[start..at]) {
                    return false;
                }
                named = true;
            }
            _ => seen |= 1 << (byte & 31),
        }
    }
    true
}

/// Writes `target` with a job id under the jobs' path (`jobs_prefix`, e.g. `/jobs/`)
/// replaced by its tag, and the value of each query parameter whose name contains one
/// of [`SECRET_NAMES`] replaced by `REDACTED`.
pub(super) fn put_target(out: &mut Vec<u8>, target: &[u8], jobs_prefix: Option<&[u8]>) {
    let (path, query) = match memchr::memchr(b'?', target) {
        Some(mark) => (&target[..mark], Some(&target[mark + 1..])),
        None => (target, None),
    };
    match jobs_prefix.filter(|prefix| path.starts_with(prefix)) {
        Some(prefix) if path.len() > prefix.len() => {
            let rest = &path[prefix.len()..];
            let id_len = memchr::memchr2(b'/', b'#', rest).unwrap_or(rest.len());
            out.extend_from_slice(prefix);
            if id_len > 0 {
                out.extend_from_slice(job_tag(&rest[..id_len]).as_bytes());
            }
            out.extend_from_slice(&rest[id_len..]);
        }
        _ => out.extend_from_slice(path),
    }
    let Some(query) = query else {
        return;
    };
    out.push(b'?');
    // Each parameter in turn, found with memchr rather than byte by byte; each is
    // copied with its `&` when it holds no secret.
    let mut rest = query;
    loop {
        let end = memchr::memchr(b'&', rest).unwrap_or(rest.len());
        let pair = &rest[..end];
        match memchr::memchr(b'=', pair) {
            Some(eq) if is_secret_name(&pair[..eq]) => {
                out.extend_from_slice(&pair[..=eq]);
                out.extend_from_slice(b"REDACTED");
                out.extend_from_slice(&rest[end..(end + 1).min(rest.len())]);
            }
            _ => out.extend_from_slice(&rest[..(end + 1).min(rest.len())]),
        }
        if end == rest.len() {
            return;
        }
        rest = &rest[end + 1..];
    }
}

/// Whether a query parameter's name marks a secret (see [`SECRET_NAMES`]). It runs for
/// every logged query parameter, so the name's letters are gathered first, and only a
/// name holding every letter of some word is searched ([`holds_secret_word`]).
fn is_secret_name(name: &[u8]) -> bool {
    may_hold_secret(letters(name)) && holds_secret_word(name)
}

/// The letters of `bytes`, one bit each (bit `byte & 31`, so either case sets the same
/// bit; a byte that is not a letter may set a letter's bit, which only lets a name
/// through to the search).
fn letters(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0, |mask, &byte| mask | 1 << (byte & 31))
}

/// Whether a name with these [`letters`] has every letter of one of [`SECRET_NAMES`]:
/// false for most names, which then need no search.
fn may_hold_secret(letters: u32) -> bool {
    SECRET_LETTERS.iter().any(|&word| word & !letters == 0)
}

/// The [`letters`] of each of [`SECRET_NAMES`].
const SECRET_LETTERS: [u32; SECRET_NAMES.len()] = {
    let mut masks = [0u32; SECRET_NAMES.len()];
    let mut i = 0;
    while i < SECRET_NAMES.len() {
        let word = SECRET_NAMES[i];
        let mut j = 0;
        while j < word.len() {
            masks[i] |= 1 << (word[j] & 31);
            j += 1;
        }
        i += 1;
    }
    masks
};

/// Whether `name` contains one of [`SECRET_NAMES`], ASCII case ignored: each position
/// is first tried by its two letters (in either case) with one look-up in a table of
/// the words' first two letters, and only a match is compared whole.
fn holds_secret_word(name: &[u8]) -> bool {
    for (start, pair) in name.windows(2).enumerate() {
        let first = pair[0] | 0x20;
        let seconds = SECRET_SECONDS[usize::from(first)];
        let second = pair[1] | 0x20;
        if seconds & (1 << (second & 31)) == 0 {
            continue;
        }
        let lead = [first, second];
        let rest = &name[start..];
        let found = SECRET_NAMES.iter().any(|word| {
            word[..2] == lead
                && rest.len() >= word.len()
                && rest[..word.len()].eq_ignore_ascii_case(word)
        });
        if found {
            return true;
        }
    }
    false
}

/// The first two letters of each of [`SECRET_NAMES`], lower case.
const SECRET_LEADS: [[u8; 2]; 8] = [
    *b"to", *b"ke", *b"se", *b"pa", *b"pw", *b"si", *b"au", *b"cr",
];

/// For each byte (lower-cased with `| 0x20`), the second letters that follow it in
/// [`SECRET_LEADS`], one bit each (bit `letter & 31`; 0 where it begins none). A byte
/// that is not a letter may share a letter's bit: the whole compare then tells.
const SECRET_SECONDS: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < SECRET_LEADS.len() {
        let [first, second] = SECRET_LEADS[i];
        table[first as usize] |= 1 << (second & 31);
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_copied_whole_is_the_line_built_piece_by_piece() {
        // Whatever `logs_as_it_is` lets through in one copy, `put_target` would have
        // written unchanged; and it lets the usual targets through.
        let jobs = Some(&b"/jobs/"[..]);
        let targets: [&[u8]; 16] = [
            b"/is_prime?possible_prime=7",
            b"/x",
            b"/x?",
            b"/x?a",
            b"/x?a&b=1&&c==2",
            b"/x?n=7&api_key=abc",
            b"/x?key",
            b"/x?a=key&b=token",
            b"/x?=token",
            b"/x?KEY=1",
            b"/jobs/abc/result",
            b"/jobs/",
            b"/jobs",
            b"/other/jobs/abc",
            b"/x?q=a b",
            b"http://h/x?session=1",
        ];
        let mut copied = 0;
        for target in targets {
            let line = [&b"GET "[..], target, b" HTTP/1.1"].concat();
            let rest = &line[4..];
            let mut pieces = Vec::new();
            let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
            put_target(&mut pieces, &rest[..end], jobs);
            if logs_as_it_is(rest, jobs) {
                copied += 1;
                assert_eq!(pieces, &rest[..end], "{}", String::from_utf8_lossy(target));
            }
        }
        assert_eq!(
            copied, 11,
            "the targets with nothing to hide are copied whole"
        );
        assert!(!logs_as_it_is(b"/x?n=7&api_key=abc HTTP/1.1", None));
        assert!(!logs_as_it_is(b"/jobs/abc HTTP/1.1", jobs));
        assert!(logs_as_it_is(b"/jobs/abc HTTP/1.1", None));
        assert!(
            logs_as_it_is(b"/x?n=7 HTTP/1.1&key=1", None),
            "past the target"
        );
    }

    #[test]
    fn secret_names_are_found_anywhere_in_any_case() {
        // The plain definition: the name contains a word, ASCII case ignored.
        let plain = |name: &[u8]| {
            let lower = name.to_ascii_lowercase();
            SECRET_NAMES
                .iter()
                .any(|word| lower.windows(word.len()).any(|w| w == *word))
        };
        let mut names: Vec<Vec<u8>> = ["possible_prime", "n", "", "k", "PASSWD", "x_Auth", "mon"]
            .iter()
            .map(|n| n.as_bytes().to_vec())
            .collect();
        for word in SECRET_NAMES {
            for (before, after) in [("", ""), ("x", ""), ("", "_id"), ("a-", "-b")] {
                let mut name = before.as_bytes().to_vec();
                name.extend_from_slice(word);
                name.extend_from_slice(after.as_bytes());
                names.push(name.to_ascii_uppercase());
                // One letter short of the word is no secret (unless another word fits).
                names.push(name[..before.len() + word.len() - 1].to_vec());
                names.push(name);
            }
        }
        for name in &names {
            if plain(name) {
                assert!(may_hold_secret(letters(name)), "{name:?}");
            }
            assert_eq!(
                is_secret_name(name),
                plain(name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }
}
