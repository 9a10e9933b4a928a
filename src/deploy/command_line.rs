//! How every binary is called, declared once: the three flags they all take
//! (`--listen`, `--concurrency`, `--config`: [`CommonArgs`], with what each means to a
//! binary in its [`Roles`]), positionals that a flag may stand for ([`place`]),
//! `--version` with the commit, the same closing paragraph of every help, and the hidden
//! `--generate man|bash|zsh|fish|elvish|powershell` for packagers. Binaries call
//! [`parse`] (re-exported by `deploy::cli`) instead of clap's `Parser::parse`.

use std::str::FromStr;
use std::time::Duration;

/// The text of [`LOGGING_HELP`], as a literal for `concat!`.
macro_rules! logging_help {
    () => {
        "Logs go to stderr, at info level and above unless RUST_LOG says otherwise (e.g. \
RUST_LOG=debug, or RUST_LOG=warn,prime_server::server=debug). Exit codes: 0 after a clean \
stop, 2 for a usage or configuration error."
    };
}

/// The text of [`README_POINTER`], as a literal for `concat!`.
macro_rules! readme_pointer {
    () => {
        "More: README.md in the prime_server source (running, deploying, the topology file, \
every binary's --listen, --concurrency and --config, and installing them with their man \
pages, completions and systemd units)."
    };
}

/// Where logs go and how to choose them: the first paragraph of [`AFTER_HELP`].
pub const LOGGING_HELP: &str = logging_help!();

/// The version every binary prints for `--version`: the crate's version and the commit
/// it was built from (`0.1.0 (commit 4f63cbb)`), or `unknown commit` when it was built
/// outside a git checkout (see `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PRIME_SERVER_COMMIT"),
    ")"
);

/// Where every help ends: where logs go, the exit codes, and the pointer to the README.
pub const AFTER_HELP: &str = concat!(logging_help!(), "\n\n", readme_pointer!());

/// The last line of every binary's help.
pub const README_POINTER: &str = readme_pointer!();

/// The help of `--config` where it reads a topology file's front-end entry.
pub const FRONT_END_CONFIG_HELP: &str = "Read a topology file: its front_end entry gives \
LISTEN, --netstring, --health-path, --status-path and --jobs-db, and each of this \
binary's stages the file names its concurrency (the file's other endpoints are not used: \
the stages run as threads); arguments and flags still override";

/// What one of the three shared flags ([`CommonArgs`]) means to a binary.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// The binary takes the flag; the text is its help.
    Takes(&'static str),
    /// The binary has nothing the flag could set: it is hidden from the help, and given
    /// anyway it is refused (exit 2) with this reason.
    Refuses(&'static str),
}

/// What `--listen`, `--concurrency` and `--config` mean to one binary.
#[derive(Clone, Copy, Debug)]
pub struct Roles {
    /// `--listen`.
    pub listen: Role,
    /// `--concurrency`.
    pub concurrency: Role,
    /// `--config`.
    pub config: Role,
}

/// The three flags every binary takes in the same form: where it listens, how many
/// workers it runs, and the topology file it reads. A binary declares what each means
/// to it (its [`Roles`], given to [`parse`]); where one of them means nothing, it is
/// refused with a reason rather than unknown.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CommonArgs {
    /// Where clients connect (bound).
    #[arg(long, value_name = "LISTEN")]
    pub listen: Option<String>,
    /// Workers.
    #[arg(long, value_name = "N", value_parser = at_least_one::<usize>)]
    pub concurrency: Option<usize>,
    /// A topology file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// The hidden option that writes a man page or a shell's completions to stdout.
const GENERATE: &str = "generate";

/// What `--generate` writes.
const GENERATE_WHAT: [&str; 6] = ["man", "bash", "zsh", "fish", "elvish", "powershell"];

/// The command line of binary `name` as every binary has it: its clap definition with
/// the shared version, the closing paragraph of its help, what the three shared flags
/// mean to it (`roles`), and the hidden `--generate man|bash|zsh|fish|elvish|powershell`.
pub fn command<C: clap::CommandFactory>(name: &'static str, roles: &Roles) -> clap::Command {
    let mut command = C::command()
        .name(name)
        .bin_name(name)
        .version(VERSION)
        .after_help(AFTER_HELP)
        .arg(
            clap::Arg::new(GENERATE)
                .long(GENERATE)
                .value_name("WHAT")
                .value_parser(GENERATE_WHAT)
                .exclusive(true)
                .hide(true)
                .help("Write this binary's man page, or a shell's completions, to stdout"),
        );
    for (id, role) in roles.each() {
        command = command.mut_arg(id, |arg| match role {
            Role::Takes(help) => arg.help(help),
            Role::Refuses(_) => arg.hide(true),
        });
    }
    command
}

impl Roles {
    fn each(&self) -> [(&'static str, Role); 3] {
        [
            ("listen", self.listen),
            ("concurrency", self.concurrency),
            ("config", self.config),
        ]
    }
}

/// Parses the command line of binary `name` (see [`command`]): writes the man page or
/// completions `--generate` asks for and exits 0, refuses a shared flag the binary has
/// no use for (exit 2), and exits 2 with clap's message for any other usage error.
pub fn parse<C: clap::Parser>(name: &'static str, roles: &Roles) -> C {
    let mut command = command::<C>(name, roles);
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let refuse = |command: &mut clap::Command, id: &str, why: &str| -> ! {
        command
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{name} takes no --{id}: {why}"),
            )
            .exit()
    };
    let matches = match command.clone().try_get_matches_from(&argv) {
        Ok(matches) => matches,
        Err(e) => {
            // A refused flag says why even when something else is wrong too (a
            // required option missing): that is the mistake to explain.
            for (id, role) in roles.each() {
                let flag = format!("--{id}");
                let given = argv.iter().skip(1).any(|arg| {
                    let arg = arg.to_string_lossy();
                    arg == flag || arg.starts_with(&format!("{flag}="))
                });
                if let (true, Role::Refuses(why)) = (given, role) {
                    refuse(&mut command, id, why);
                }
            }
            e.exit()
        }
    };
    if let Some(what) = matches.get_one::<String>(GENERATE) {
        let written = generate(command, what, &mut std::io::stdout().lock());
        std::process::exit(match written {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: --generate {what}: {e}");
                1
            }
        });
    }
    for (id, role) in roles.each() {
        let given = matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        if let (true, Role::Refuses(why)) = (given, role) {
            refuse(&mut command, id, why);
        }
    }
    C::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

/// Writes the man page (`man`) or a shell's completions of `command` to `out`.
fn generate(
    mut command: clap::Command,
    what: &str,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    if what == "man" {
        return clap_mangen::Man::new(command).render(out);
    }
    let shell: clap_complete::Shell = what
        .parse()
        .map_err(|e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let name = command.get_name().to_string();
    clap_complete::generate(shell, &mut command, name, out);
    Ok(())
}

/// One value a binary takes either as a positional argument or as a flag: its
/// positional name (`LISTEN`), its flag (`--listen`) and the flag's value, if given.
#[derive(Debug)]
pub struct Slot {
    /// The positional's name in the usage line.
    pub name: &'static str,
    /// The flag that stands for it.
    pub flag: &'static str,
    /// The value: the flag's, then the positional's once [`place`] has run.
    pub value: Option<String>,
}

impl Slot {
    /// A slot whose flag gave `value` (or was not given).
    pub fn new(name: &'static str, flag: &'static str, value: Option<String>) -> Slot {
        Slot { name, flag, value }
    }
}

/// Places positional arguments into `slots` (in usage order), so that the same values
/// may come as positionals, as flags, or mixed: when every slot is given positionally,
/// the positionals fill them in order and a flag that says something else is an error
/// (`LISTEN is given twice`); otherwise they fill, in order, the slots no flag gave
/// (`prime_echod --listen tcp://127.0.0.1:8002 4`). More positionals than that is an
/// error too.
pub fn place(slots: &mut [Slot], positionals: Vec<String>) -> Result<(), String> {
    if positionals.len() == slots.len() {
        for (slot, value) in slots.iter_mut().zip(positionals) {
            match &slot.value {
                Some(flag) if *flag != value => {
                    return Err(format!(
                        "{} is given twice, as {value:?} and as {} {flag:?}",
                        slot.name, slot.flag
                    ))
                }
                _ => slot.value = Some(value),
            }
        }
        return Ok(());
    }
    let free: Vec<&mut Slot> = slots.iter_mut().filter(|s| s.value.is_none()).collect();
    if positionals.len() > free.len() {
        let names: Vec<&str> = free.iter().map(|s| s.name).collect();
        return Err(format!(
            "too many arguments: {positionals:?}, where only {} {} left to give (the \
             others came as flags)",
            if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(" ")
            },
            if names.len() == 1 { "is" } else { "are" },
        ));
    }
    for (slot, value) in free.into_iter().zip(positionals) {
        slot.value = Some(value);
    }
    Ok(())
}

/// The value of a slot [`place`] filled, or an error naming both ways to give it.
pub fn required(slot: &Slot) -> Result<String, String> {
    slot.value
        .clone()
        .ok_or_else(|| format!("give {} (or {})", slot.name, slot.flag))
}

/// Reads a count of at least 1 that came as a positional or a flag.
pub fn count(slot: &Slot) -> Result<usize, String> {
    let text = required(slot)?;
    at_least_one::<usize>(&text).map_err(|e| format!("{}: {e}", slot.name))
}

/// A clap value parser for counts that must be at least 1 (`--prefetch`, workers).
pub fn at_least_one<T>(text: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + From<u8>,
{
    match text.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of at least 1")),
    }
}

/// Reads a positive number of seconds given to `flag`.
pub fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{flag} must be a positive number of seconds, not {value}"))
}

/// The bytes of a key file named by `flag`, a trailing newline removed.
pub fn key_file(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(listen: Option<&str>, concurrency: Option<&str>) -> [Slot; 2] {
        [
            Slot::new("LISTEN", "--listen", listen.map(str::to_string)),
            Slot::new(
                "CONCURRENCY",
                "--concurrency",
                concurrency.map(str::to_string),
            ),
        ]
    }

    fn placed(slots: &[Slot]) -> Vec<Option<&str>> {
        slots.iter().map(|s| s.value.as_deref()).collect()
    }

    #[test]
    fn positionals_fill_the_slots_no_flag_gave() {
        let positionals = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        // All positional, all flags, mixed in either order.
        let mut all = slots(None, None);
        place(&mut all, positionals(&["tcp://a:1", "4"])).unwrap();
        assert_eq!(placed(&all), [Some("tcp://a:1"), Some("4")]);
        let mut flags = slots(Some("tcp://a:1"), Some("4"));
        place(&mut flags, vec![]).unwrap();
        assert_eq!(placed(&flags), [Some("tcp://a:1"), Some("4")]);
        let mut mixed = slots(Some("tcp://a:1"), None);
        place(&mut mixed, positionals(&["4"])).unwrap();
        assert_eq!(placed(&mixed), [Some("tcp://a:1"), Some("4")]);
        let mut mixed = slots(None, Some("4"));
        place(&mut mixed, positionals(&["tcp://a:1"])).unwrap();
        assert_eq!(placed(&mixed), [Some("tcp://a:1"), Some("4")]);
        // Both ways, agreeing: fine; disagreeing: an error naming both.
        let mut same = slots(Some("tcp://a:1"), None);
        place(&mut same, positionals(&["tcp://a:1", "4"])).unwrap();
        let mut twice = slots(None, Some("3"));
        let error = place(&mut twice, positionals(&["tcp://a:1", "4"])).unwrap_err();
        assert!(error.contains("CONCURRENCY is given twice") && error.contains("--concurrency"));
        let mut extra = slots(Some("tcp://a:1"), Some("4"));
        assert!(place(&mut extra, positionals(&["x"])).is_err());
        // Missing: the error names the positional and its flag.
        let missing = slots(None, None);
        assert_eq!(
            required(&missing[0]).unwrap_err(),
            "give LISTEN (or --listen)"
        );
        assert!(count(&Slot::new("CONCURRENCY", "--concurrency", Some("0".into()))).is_err());
    }
}

/// The WebSocket options of every front end (`--ws-ping`, `--ws-max-message`).
#[derive(clap::Args, Clone, Debug)]
pub struct WebSocketArgs {
    /// Ping a WebSocket that has sent nothing for this many seconds, and drop it when
    /// it stays quiet as long again (0: never ping).
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    pub ws_ping: f64,
    /// The largest message a WebSocket client may send, in bytes (its fragments
    /// together); a larger one closes the socket with status 1009.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub ws_max_message: usize,
}

impl WebSocketArgs {
    /// The front end's WebSocket settings these options describe.
    pub fn config(&self) -> Result<crate::server::WebSocketConfig, String> {
        let ping = match self.ws_ping {
            0.0 => None,
            s => Some(
                Duration::try_from_secs_f64(s)
                    .map_err(|_| format!("--ws-ping must be a number of seconds, not {s}"))?,
            ),
        };
        if self.ws_max_message == 0 {
            return Err("--ws-max-message must be at least 1".into());
        }
        Ok(crate::server::WebSocketConfig {
            ping,
            max_message: self.ws_max_message,
        })
    }
}
