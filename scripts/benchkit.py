"""benchkit: what the benchmark drivers under scripts/ share (Python 3, standard library).

The drivers (scripts/bench, bench-instructions, bench-simulation, bench-gateway,
bench-routing, bench-delivery, bench-jobs) import this module from their own folder:

    import os, sys
    sys.dont_write_bytecode = True   # no __pycache__ beside the scripts
    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
    import benchkit as bk

What is here, in the order of this file:
  - paths: the repository root, the cargo target dir (CARGO_TARGET_DIR), the profile
    (BENCH_PROFILE), the binaries' folder and a binary in it;
  - setup: installing missing tools with apt-get, `cargo build`, building one binary
    and copying it into a work folder (or BENCH_BINARY's), raising the open-file
    limit, the commit being measured;
  - processes: a registry of every process a driver starts, stopped on every exit path
    (normal end, an exception, SIGINT, SIGTERM, SIGHUP) by `cleanup()`, which is
    registered with atexit and also removes the `scratch_dir()` folders; exit statuses
    as a shell shows them; running a function in threads;
  - ports: a free port, the port a process listens on (read from /proc, like `ss -ltnp`),
    a port read from a server's log, waiting until a port answers; all bounded in time;
  - /proc readings: VmRSS/VmHWM, resetting VmHWM (clear_refs), CPU time, context
    switches over every thread, the open-file limit, the load average; the filesystem
    a path is on;
  - a server's /status and log: GET /status, waiting until no job is queued or running,
    the WARN/ERROR lines of a log;
  - load generators: running wrk and ab and parsing their outputs (wrk's human output and
    the `BENCH key=value` line that scripts/bench.lua prints), one HTTP probe;
  - statistics and formatting: median, nearest-rank percentile, ratios, MB, awk-like
    numbers, `TAG key=value` result lines;
  - the report: lines printed on stdout and appended to a report file, sections with
    the load average, tables, servers that died or did not stop cleanly, and the
    PROBLEMS list printed at the end.

Nothing here sends traffic anywhere but to the URLs a driver gives it; the drivers only
use 127.0.0.1.
"""

import atexit
import errno
import glob
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# ---------------------------------------------------------------- paths

SCRIPTS = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.dirname(SCRIPTS)

# The program's name in messages ("bench", "bench-gateway", ...); set by init().
PROGRAM = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "bench"


def target_dir():
    """Cargo's target folder: $CARGO_TARGET_DIR, else ROOT/target."""
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")


def profile():
    """The cargo profile the drivers build and run: $BENCH_PROFILE, else release."""
    return os.environ.get("BENCH_PROFILE") or "release"


def bin_dir(prof=None):
    """The folder of the built binaries for a profile (examples are in its examples/)."""
    return os.path.join(target_dir(), prof or profile())


def binary(name, prof=None):
    """A built binary of a profile ("prime_serverd", "examples/stream_hello")."""
    return os.path.join(bin_dir(prof), name)


def report_dir():
    """ROOT/target, where the reports and logs go (not CARGO_TARGET_DIR, as before)."""
    return os.path.join(ROOT, "target")


def init(program=None):
    """Names the program in messages and installs the cleanup handlers.

    Call it first in every driver. It is also called by start(), so that no process is
    ever started without the handlers in place.
    """
    global PROGRAM
    if program:
        PROGRAM = program
    _install_cleanup()


def die(message):
    """Prints `PROGRAM: message` on stderr and exits with status 1 (cleanup runs)."""
    print("%s: %s" % (PROGRAM, message), file=sys.stderr, flush=True)
    raise SystemExit(1)


def note(message):
    """A progress message on stderr (not part of any report)."""
    print("%s: %s" % (PROGRAM, message), file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup

_apt_updated = False


def _as_root(argv):
    """argv, prefixed with sudo when not root."""
    return argv if os.geteuid() == 0 else ["sudo"] + argv


def apt_install(packages, quiet=True):
    """Installs Debian packages with apt-get (apt-get update once per run first).

    Returns True when apt-get succeeded. Its output goes to stderr, or nowhere with quiet.
    """
    global _apt_updated
    if not packages or shutil.which("apt-get") is None:
        return False
    out = subprocess.DEVNULL if quiet else sys.stderr
    note("installing %s" % " ".join(packages))
    if not _apt_updated:
        subprocess.call(_as_root(["apt-get", "update", "-qq"]), stdout=out, stderr=out)
        _apt_updated = True
    status = subprocess.call(_as_root(["apt-get", "install", "-y", "-qq"] + list(packages)),
                             stdout=out, stderr=out)
    return status == 0


def ensure_tools(tools, optional=()):
    """Makes sure the commands are on PATH, installing their packages when missing.

    tools: {command: Debian package}, e.g. {"wrk": "wrk", "ab": "apache2-utils"}.
    optional: commands whose absence is allowed. Dies when a required command is still
    missing; returns the set of optional commands that are missing.
    """
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        packages = sorted({tools[tool] for tool in missing})
        apt_install(packages)
    still = {tool for tool in tools if shutil.which(tool) is None}
    required = still - set(optional)
    if required:
        die("missing %s (apt-get could not install %s)"
            % (", ".join(sorted(required)), ", ".join(sorted({tools[t] for t in required}))))
    return still


def cargo_build(args, quiet=False):
    """Runs `cargo build ARGS...` in the repository root; dies when it fails.

    Its output goes to stderr, so that a driver's stdout holds only its results.
    """
    argv = ["cargo", "build"] + (["-q"] if quiet else []) + list(args)
    note("%s (target dir %s)" % (" ".join(argv), target_dir()))
    status = subprocess.call(argv, cwd=ROOT, stdout=sys.stderr)
    if status != 0:
        die("cargo build failed (status %d): nothing was measured" % status)


def build_and_copy(name, work_dir, no_build=False, binary_env=None):
    """The binary a driver measures: `cargo build --bin NAME` of the profile (unless
    no_build), then a copy of it in work_dir, so that a rebuild of the tree during the
    run does not change what is measured.

    With binary_env naming an environment variable that is set (BENCH_BINARY), the file
    it names is copied instead and nothing is built. Returns (the copy's path, where it
    came from, as the report says it). Dies when there is no binary to copy.
    """
    copy = os.path.join(work_dir, os.path.basename(name))
    given = os.environ.get(binary_env) if binary_env else None
    if given:
        try:
            shutil.copy2(given, copy)
        except OSError:
            die("cannot copy %s=%s" % (binary_env, given))
        return copy, "%s (%s)" % (given, binary_env)
    built = binary(name)
    if no_build:
        origin = "%s, not rebuilt (--no-build)" % built
    else:
        prof = profile()
        cargo_build((["--release"] if prof == "release" else ["--profile", prof]) + ["--bin", name])
        origin = "cargo build --%s of this tree" % prof
    if not executable(built):
        die("no binary %s%s" % (built, " (run without --no-build to build it)" if no_build else ""))
    shutil.copy2(built, copy)
    return copy, origin


def raise_nofile(wanted=None):
    """Raises the soft limit of open files to the hard one (or to wanted, if lower).

    Children inherit it. Returns the soft limit now in force (a large number stands for
    unlimited).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = wanted if wanted else 1048576
    elif wanted is not None:
        target = min(hard, wanted)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1048576


def commit_text():
    """The short commit of ROOT, with " (with uncommitted changes)" when it has any."""
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    if not commit:
        return "unknown"
    try:
        dirty = subprocess.call(["git", "-C", ROOT, "diff", "--quiet", "HEAD"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        dirty = 0
    return commit + (" (with uncommitted changes)" if dirty else "")


def executable(path):
    """True when path is an executable file."""
    return os.path.isfile(path) and os.access(path, os.X_OK)


# ---------------------------------------------------------------- processes


class Proc:
    """A process a driver started: its name, Popen object, command and log files."""

    def __init__(self, name, popen, argv, stdout_path, stderr_path):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.argv = argv
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.port = None

    def alive(self):
        """True while the process has not exited."""
        return self.popen.poll() is None

    def returncode(self):
        """Its exit status once it has exited (negative: killed by that signal), else None."""
        return self.popen.poll()

    def stderr_tail(self, lines=5):
        """The last lines of its stderr log, joined by spaces ("" without a log)."""
        return tail(self.stderr_path, lines)


# Every process started and not yet reaped; cleanup() stops them.
_RUNNING = []
# Temporary folders that cleanup() removes once the processes are stopped.
_SCRATCH = []
_cleanup_installed = False


def _signal_exit(signum, frame):
    """Turns SIGINT/SIGTERM/SIGHUP into SystemExit(128 + signal), so cleanup runs."""
    raise SystemExit(128 + signum)


def _install_cleanup():
    global _cleanup_installed
    if _cleanup_installed:
        return
    _cleanup_installed = True
    atexit.register(cleanup)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _signal_exit)


def cleanup():
    """Stops every process still registered (SIGTERM, then SIGKILL after 5 s).

    Then removes the scratch_dir() folders. Registered with atexit; signals are ignored
    while it runs so that a second Ctrl-C cannot cut it short.
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(signum, signal.SIG_IGN)
        except (ValueError, OSError):
            pass
    # The latest first: clients end before the servers they talk to.
    for proc in reversed(list(_RUNNING)):
        stop(proc, grace=5.0)
    for path in _SCRATCH:
        shutil.rmtree(path, ignore_errors=True)
    del _SCRATCH[:]


def scratch_dir():
    """A new temporary folder, removed by cleanup() after the processes are stopped."""
    init()
    path = tempfile.mkdtemp(prefix=PROGRAM + ".")
    _SCRATCH.append(path)
    return path


def _open_output(target):
    """A Popen stdout/stderr from a path (truncated), DEVNULL/PIPE/None, or a file."""
    if isinstance(target, (str, os.PathLike)):
        return open(target, "wb"), str(target)
    return target, None


def child_env(env=None):
    """os.environ with env's entries applied (a value of None removes the variable)."""
    merged = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged


def start(argv, name=None, env=None, stdout=None, stderr=None, cwd=None, stdin=subprocess.DEVNULL):
    """Starts a process in the background and registers it for cleanup.

    argv: the command. env: variables to set (None unsets one). stdout, stderr: a path
    (truncated), subprocess.DEVNULL, subprocess.PIPE, or None to inherit the driver's.
    The process gets its own session and process group, so that a Ctrl-C on the
    terminal reaches the driver only (which then stops it), and stop() can end the
    process's own children too.
    """
    init()
    argv = [str(a) for a in argv]
    out, out_path = _open_output(stdout)
    err, err_path = _open_output(stderr)
    try:
        popen = subprocess.Popen(argv, env=child_env(env), stdout=out, stderr=err, cwd=cwd,
                                 stdin=stdin, start_new_session=True)
    except OSError as error:
        die("cannot start %s: %s" % (argv[0], error))
    finally:
        for handle, path in ((out, out_path), (err, err_path)):
            if path is not None:
                handle.close()
    proc = Proc(name or os.path.basename(argv[0]), popen, argv, out_path, err_path)
    _RUNNING.append(proc)
    return proc


def _signal_group(proc, signum):
    """Sends signum to the process's group (it leads one, see start()); only while the
    process is not reaped, so that a reused pid is never signalled."""
    if proc.popen.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(proc.pid, signum)
        except ProcessLookupError:
            pass


def wait(proc, timeout):
    """Waits up to timeout seconds for the process to exit; returns its status or None.

    A process that has exited is dropped from the registry.
    """
    try:
        status = proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    forget(proc)
    return status


def forget(proc):
    """Drops a process from the registry (it has exited and been reaped)."""
    if proc in _RUNNING:
        _RUNNING.remove(proc)


def group_members(pgid):
    """The pids of the live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat_path) as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # After ')': state, ppid, pgrp.
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(stat_path.split("/")[2]))
    return members


def stop(proc, grace=5.0, signum=signal.SIGTERM):
    """Stops a process and its group: signum (SIGTERM) to the group, up to grace
    seconds for all of it to exit, then SIGKILL. Returns (the process's exit status,
    seconds it took, whether something had to be killed).

    The group matters where the process is a wrapper (GNU time, valgrind's launcher, a
    driver started by another driver): its children must not outlive it.
    """
    began = time.monotonic()
    deadline = began + grace
    killed = False
    if proc.popen.poll() is None:
        _signal_group(proc, signum)
        if wait(proc, grace) is None:
            killed = True
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    # The rest of its group (Linux keeps the group's id from being reused while any
    # member lives, so signalling it after the leader is reaped is safe).
    if group_members(proc.pid):
        try:
            os.killpg(proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
        while group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_members(proc.pid):
            killed = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    forget(proc)
    return proc.popen.returncode, time.monotonic() - began, killed


def kill(proc):
    """Ends a process at once with SIGKILL (for servers that drain too slowly)."""
    return stop(proc, grace=0.0, signum=signal.SIGKILL)


def run(argv, timeout, env=None, stdout=None, stderr=None, cwd=None, name=None):
    """Runs a command to its end, at most timeout seconds (then it is stopped).

    Registered while it runs, so that a signal to the driver stops it too. Returns
    (exit status, timed out?). stdout/stderr as for start().
    """
    proc = start(argv, name=name, env=env, stdout=stdout, stderr=stderr, cwd=cwd)
    status = wait(proc, timeout)
    if status is None:
        status, _, _ = stop(proc, grace=2.0)
        return status, True
    return status, False


def run_capture(argv, timeout, env=None, stderr=None, cwd=None):
    """Runs a command to its end (at most timeout seconds); returns (status, its stdout
    as text, timed out?). stderr as for start()."""
    proc = start(argv, env=env, stdout=subprocess.PIPE, stderr=stderr, cwd=cwd)
    try:
        out, _ = proc.popen.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        stop(proc, grace=2.0)
        out, _ = proc.popen.communicate()
        timed_out = True
    forget(proc)
    return proc.popen.returncode, out.decode("utf-8", "replace"), timed_out


def run_streamed(argv, timeout, on_line, env=None, stderr=None, cwd=None):
    """Runs a command, calling on_line(line) for each line of its stdout as it comes
    (without the newline). The command is stopped once timeout seconds have passed: a
    timer thread stops it, so that waiting for a line never outlasts the deadline.
    Returns (exit status, timed out?)."""
    proc = start(argv, env=env, stdout=subprocess.PIPE, stderr=stderr, cwd=cwd)
    expired = []

    def expire():
        expired.append(True)
        stop(proc, grace=2.0)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        for raw in proc.popen.stdout:
            on_line(raw.decode("utf-8", "replace").rstrip("\n"))
        proc.popen.wait()
    finally:
        timer.cancel()
        proc.popen.stdout.close()
    forget(proc)
    return proc.popen.returncode, bool(expired)


def exit_status(status):
    """A Popen status as a shell reports it: a death by signal N (status -N) is 128 + N."""
    return 128 - status if status is not None and status < 0 else status


def run_threads(count, body):
    """Runs body(i) for i in 0..count-1, each in a thread of its own, and waits for them
    all (daemon threads: a signal to the driver does not wait for them)."""
    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def tail(path, lines=5):
    """The last lines of a text file, joined by spaces ("" when it cannot be read)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " ".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------- ports


def free_port():
    """A TCP port of 127.0.0.1 that is free now (the kernel's pick for port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _socket_inodes(pid):
    """The inodes of the sockets a process has open."""
    inodes = set()
    for fd in glob.glob("/proc/%d/fd/*" % pid):
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def listening_ports(pid):
    """The TCP ports a process listens on (from /proc/net/tcp{,6}, as `ss -ltnp` reads)."""
    inodes = _socket_inodes(pid)
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    # fields: sl local_address rem_address st ... inode (10th)
                    if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
                        port = int(fields[1].rsplit(":", 1)[1], 16)
                        if port not in ports:
                            ports.append(port)
        except OSError:
            continue
    return ports


def wait_for_listen(proc, timeout=10.0):
    """The TCP port a started server listens on, once it does (it bound port 0, so the
    kernel picked a free one). Dies when the process exits first or after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            die("%s exited at start; its stderr: %s" % (proc.name, proc.stderr_tail(5)))
        ports = listening_ports(proc.pid)
        if ports:
            proc.port = ports[0]
            return proc.port
        if time.monotonic() > deadline:
            die("%s did not listen within %g s" % (proc.name, timeout))
        time.sleep(0.1)


def wait_for_log(proc, pattern, path=None, timeout=30.0):
    """The first match of a regular expression in a server's log (its stderr unless a
    path is given), once it is written: the match object. Dies when the process exits
    first or after timeout seconds."""
    path = path or proc.stderr_path
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                match = regex.search(handle.read())
        except OSError:
            match = None
        if match:
            return match
        if not proc.alive():
            die("%s exited at start; its log: %s" % (proc.name, tail(path, 20)))
        if time.monotonic() > deadline:
            die("%s did not log /%s/ within %g s; its log: %s"
                % (proc.name, pattern, timeout, tail(path, 20)))
        time.sleep(0.1)


def wait_for_http(port, timeout=30.0, host="127.0.0.1", proc=None):
    """Waits until something answers HTTP on host:port (any status). Returns True, or
    False after timeout seconds or once proc (if given) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            return False
        try:
            connection = http.client.HTTPConnection(host, port, timeout=2)
            connection.request("GET", "/")
            connection.getresponse().read()
            connection.close()
            return True
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
    return False


def probe(url, timeout=60.0):
    """One GET, no proxy: (status, seconds, the body's first 200 characters).

    status is 0 when no answer came; the body then holds the error.
    """
    match = re.match(r"http://([^/:]+)(?::(\d+))?(/.*)?$", url)
    if not match:
        return 0, 0.0, "(bad URL %s)" % url
    host, port, path = match.group(1), int(match.group(2) or 80), match.group(3) or "/"
    began = time.monotonic()
    try:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        connection.close()
    except (OSError, http.client.HTTPException) as error:
        return 0, time.monotonic() - began, "(%s)" % (error or type(error).__name__)
    seconds = time.monotonic() - began
    return response.status, seconds, body[:200].decode("utf-8", "replace").strip()


# ---------------------------------------------------------------- /proc readings


def proc_kb(pid, key):
    """A field of /proc/PID/status in kB (VmRSS, VmHWM), or None."""
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (echo 5 > /proc/PID/clear_refs), so that it
    becomes the peak of the coming load. Returns False when the kernel refused."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ms(pid):
    """CPU time a process has used so far (all threads, user + system), in ms; 0 when
    it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            stat = handle.read()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: count the fields after its ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    # utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    return (int(fields[11]) + int(fields[12])) * 1000.0 / _CLK_TCK


def context_switches(pid):
    """Context switches a process has made so far: voluntary + involuntary, summed over
    /proc/PID/task/*/status (every thread alive now); 0 when it is gone."""
    total = 0
    for status in glob.glob("/proc/%d/task/*/status" % pid):
        try:
            with open(status) as handle:
                for line in handle:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def proc_nofile(pid):
    """The soft limit of open files of a process (from /proc/PID/limits), as text
    ("unlimited" or a number; "?" when it cannot be read)."""
    for line in read_text("/proc/%d/limits" % pid).splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "?"


def fs_type(path):
    """The type of the filesystem holding path, as `stat -f -c %T` names it ("?" when
    unknown)."""
    try:
        return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def fs_device(path):
    """The device of the filesystem holding path, as `df -P` names it ("?" when unknown)."""
    try:
        lines = subprocess.run(["df", "-P", path], capture_output=True, text=True,
                               timeout=10).stdout.splitlines()
        return lines[1].split()[0] if len(lines) > 1 else "?"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def loadavg(fields=1):
    """The first fields of /proc/loadavg, space-separated ("1.23" or "1.23 0.98 0.50")."""
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:fields])
    except OSError:
        return "?"


def cores():
    """The number of cores this process may use (what nproc prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def busy():
    """True when the 1-minute load average is above the core count."""
    try:
        return float(loadavg(1)) > cores()
    except ValueError:
        return False


# ---------------------------------------------------------------- a server's /status and log


# The states in which a job has ended.
JOB_END_STATES = ("succeeded", "failed", "cancelled")


def status_doc(port, timeout=10):
    """GET /status of a server on 127.0.0.1:port (prime_serverd --status-path /status)
    as a dict; raises RuntimeError when it answers other than 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/status")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError("GET /status answered %d" % response.status)
    return json.loads(body)


def idle_wait(port, limit, interval=0.25):
    """Waits until no job is queued or running on a server (the jobs member of its
    /status, read every interval seconds; a read that fails is retried), at most limit
    seconds.

    Returns a dict: ok (no job left), seconds (the wait, as "%.1f" text), peak_queued
    and peak_oldest_queued_ms (the highest queued and oldest_queued_ms read), last (the
    last jobs member read, as JSON text).
    """
    start = time.monotonic()
    peak_queued, peak_oldest = 0, 0
    while True:
        try:
            jobs = status_doc(port)["jobs"]
        except Exception as error:  # the server may be busy: retry within the limit
            jobs = {"error": str(error)}
        queued, running = jobs.get("queued"), jobs.get("running")
        peak_queued = max(peak_queued, queued or 0)
        peak_oldest = max(peak_oldest, jobs.get("oldest_queued_ms") or 0)
        elapsed = time.monotonic() - start
        done = queued == 0 and running == 0
        if done or elapsed > limit:
            return {"ok": done, "seconds": "%.1f" % elapsed, "peak_queued": peak_queued,
                    "peak_oldest_queued_ms": peak_oldest, "last": json.dumps(jobs)}
        time.sleep(interval)


def log_warnings(path):
    """The WARN/ERROR lines of a server's log (grep -E '\\b(WARN|ERROR)\\b'): how many,
    and the first two joined by spaces, each cut to 200 characters."""
    found = [line for line in read_text(path).splitlines() if re.search(r"\b(WARN|ERROR)\b", line)]
    return len(found), " ".join(line[:200] for line in found[:2])


# ---------------------------------------------------------------- wrk

# The BENCH line of scripts/bench.lua's done(); every key is 0 when wrk printed none.
BENCH_KEYS = ("requests", "seconds", "rps", "p50_us", "p99_us",
              "connect", "read", "write", "status", "timeout")
WRK_ERROR_KEYS = ("connect", "read", "write", "status", "timeout")


def parse_bench_line(text):
    """The first `BENCH key=value ...` line of wrk's output as a dict of floats (keys
    missing or unreadable are 0; with no such line every BENCH_KEYS key is 0)."""
    result = {key: 0.0 for key in BENCH_KEYS}
    for line in text.splitlines():
        if line.startswith("BENCH "):
            for word in line.split()[1:]:
                key, _, value = word.partition("=")
                try:
                    result[key] = float(value)
                except ValueError:
                    result[key] = 0.0
            result["found"] = True
            return result
    result["found"] = False
    return result


def wrk_latency_ms(text):
    """wrk's human latency ("812.00us", "1.20ms", "2.01s", "1.50m") in milliseconds."""
    match = re.match(r"([0-9.]+)(us|ms|s|m|h)?$", text.strip())
    if not match:
        return 0.0
    value = float(match.group(1))
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0, None: 1.0}
    return value * scale[match.group(2)]


def parse_wrk_text(text):
    """wrk's own output (with --latency) as a dict: rps, p50_ms, p99_ms (the latency
    distribution), requests, and errors: the `Socket errors` and `Non-2xx or 3xx
    responses` lines, joined ("" when there are none)."""
    result = {"rps": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "requests": 0, "errors": ""}
    errors = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "Requests/sec:" and len(words) > 1:
            result["rps"] = float(words[1])
        elif words[0] == "50%" and len(words) > 1:
            result["p50_ms"] = wrk_latency_ms(words[1])
        elif words[0] == "99%" and len(words) > 1:
            result["p99_ms"] = wrk_latency_ms(words[1])
        elif len(words) > 3 and words[1] == "requests" and words[2] == "in":
            result["requests"] = int(words[0])
        elif "Non-2xx" in line or "Socket errors" in line:
            errors.append(line.strip())
    result["errors"] = "; ".join(errors)
    return result


def run_wrk(url, connections, duration, log, threads=2, lua=None, args=(), env=None,
            latency=True, timeout=None):
    """Runs one wrk (its output, stdout and stderr, to the file log) and returns
    (exit status, its output as text).

    duration: seconds (a number) or wrk's own text ("5s"). threads is lowered to
    connections when there are fewer. lua: a wrk script (-s). args: more wrk options
    before the URL. env: variables for wrk (scripts/bench.lua reads BENCH_COSTLY_*).
    The run is stopped after timeout seconds (default: its duration + 60).
    """
    seconds = duration_seconds(duration)
    threads = max(1, min(threads, connections))
    argv = ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%s" % duration_text(duration)]
    if latency:
        argv.append("--latency")
    if lua:
        argv += ["-s", lua]
    argv += list(args) + [url]
    status, timed_out = run(argv, timeout or seconds + 60, env=env, stdout=log,
                            stderr=subprocess.STDOUT, name="wrk")
    text = read_text(log)
    if timed_out:
        text += "\n(wrk was stopped after %g s)\n" % (timeout or seconds + 60)
    return status, text


def run_wrk_checked(report, url, connections, duration, log, **options):
    """One run_wrk() with a Lua script that prints a BENCH line (scripts/bench.lua,
    scripts/bench-jobs.lua); returns that line as parse_bench_line() reads it. A problem
    goes to the report when wrk fails or gets no answer at all. options: run_wrk()'s."""
    status, text = run_wrk(url, connections, duration, log, **options)
    if status != 0:
        report.problem("wrk failed on %s: %s" % (url, " ".join(text.splitlines()[-3:])))
    line = parse_bench_line(text)
    if line["requests"] == 0:
        report.problem("wrk got no answer at all from %s (see %s)" % (url, log))
    return line


def wrk_error_words(line):
    """The error counts of a BENCH line that are not 0, as words: " connect=2 timeout=5"
    ("" when there are none)."""
    return "".join(" %s=%s" % (key, num(line[key])) for key in WRK_ERROR_KEYS if line[key] != 0)


def run_wrk_or_exit(url, connections, duration, log, what, threads=1, args=()):
    """One run_wrk(), read with parse_wrk_text(), for drivers whose figures mean nothing
    with errors: when wrk fails or counts any error, its output goes to stderr after
    "wrk saw errors in WHAT:" and the driver exits with status 1."""
    status, text = run_wrk(url, connections, duration, log, threads=threads, args=args)
    result = parse_wrk_text(text)
    if status != 0 or result["errors"]:
        print("wrk saw errors in %s:" % what, file=sys.stderr)
        sys.stderr.write(text)
        raise SystemExit(1)
    return result


def start_wrk(url, connections, duration, log, threads=1, lua=None, args=(), env=None, latency=True):
    """Starts one wrk in the background (output to the file log); returns its Proc."""
    threads = max(1, min(threads, connections))
    argv = ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%s" % duration_text(duration)]
    if latency:
        argv.append("--latency")
    if lua:
        argv += ["-s", lua]
    argv += list(args) + [url]
    return start(argv, name="wrk", env=env, stdout=log, stderr=subprocess.STDOUT)


def duration_seconds(duration):
    """Seconds from a number or wrk's duration text ("10s", "2m", "500ms" is not wrk's)."""
    if isinstance(duration, (int, float)):
        return float(duration)
    match = re.match(r"([0-9.]+)([smh]?)$", str(duration))
    if not match:
        raise ValueError("bad duration %r" % duration)
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def duration_text(duration):
    """wrk's duration text ("10s") from a number of seconds, or the text as it is."""
    if isinstance(duration, (int, float)):
        return "%ds" % duration if float(duration).is_integer() else "%gs" % duration
    return str(duration)


def wrk_version():
    """`wrk 4.1.0` or similar (the first two words of `wrk --version`)."""
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "wrk ?"
    words = (out.stdout + out.stderr).splitlines()[:1]
    return " ".join(words[0].split()[:2]) if words else "wrk ?"


# ---------------------------------------------------------------- ab


def parse_ab(text):
    """ab's output as a dict: complete, failed, keep_alive (ints or None), non2xx (None
    when ab printed no such line), rps (float or None), p50_us, p99_us (ab's percentile
    table is in whole milliseconds; None when missing)."""
    result = {"complete": None, "failed": None, "non2xx": None, "keep_alive": None,
              "rps": None, "p50_us": None, "p99_us": None}
    keys = {"Complete requests:": "complete", "Failed requests:": "failed",
            "Non-2xx responses:": "non2xx", "Keep-Alive requests:": "keep_alive"}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        for prefix, key in keys.items():
            if line.startswith(prefix) and len(words) >= 3:
                result[key] = int(words[2])
        if line.startswith("Requests per second:") and len(words) >= 4:
            result["rps"] = float(words[3])
        elif words[0] == "50%" and len(words) > 1:
            result["p50_us"] = float(words[1]) * 1000
        elif words[0] == "99%" and len(words) > 1:
            result["p99_us"] = float(words[1]) * 1000
    return result


def ab_version():
    """ab's version number (`ab -V`, the fifth word of its Version line)."""
    try:
        out = subprocess.run(["ab", "-V"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    for line in out.splitlines():
        if "Version" in line and len(line.split()) >= 5:
            return line.split()[4]
    return "?"


# ---------------------------------------------------------------- statistics and formatting


def median(values):
    """The median of numbers (the mean of the two middle ones for an even count); 0 for
    none."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return 0.0
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def median_text(texts):
    """The median of numbers given as text, as awk showed it in the old scripts: the
    middle text itself for an odd count, num() of the mean of the two middle ones for
    an even count ("0" for none)."""
    ordered = sorted(texts, key=lambda text: float(text or 0))
    if not ordered:
        return "0"
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle] or "0"
    return num((float(ordered[middle - 1] or 0) + float(ordered[middle] or 0)) / 2)


def percentile(values, p):
    """The nearest-rank percentile p (0-100) of numbers; nan for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def ratio(a, b, fmt="%.2f"):
    """a / b formatted, or "-" when b is not above 0 (or either is missing)."""
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return "-"
    if b <= 0:
        return "-"
    return fmt % (a / b)


def shares(total, parts):
    """total split into parts whole numbers as equal as can be, the larger first:
    shares(10, 4) is [3, 3, 2, 2]."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def quotient(a, b):
    """a / b, or nan when b is not above 0 (a table then shows nan)."""
    return a / b if b > 0 else float("nan")


def per(total, count, fmt="%.2f", scale=1.0):
    """total * scale / count formatted, or "-" when count is 0."""
    if not count:
        return "-"
    return fmt % (float(total) * scale / count)


def goal(value, at_least):
    """"met" when a formatted figure is at least at_least, else "NOT met"."""
    try:
        return "met" if float(value) >= at_least else "NOT met"
    except (TypeError, ValueError):
        return "NOT met"


def mb(kb):
    """kB as MB with one decimal, or "-" when unknown."""
    if kb is None or kb == "" or float(kb) < 0:
        return "-"
    return "%.1f" % (float(kb) / 1024)


def us_to_ms(us):
    """Microseconds as milliseconds with two decimals."""
    return "%.2f" % (float(us or 0) / 1000)


def num(value):
    """A number as awk's print shows it: whole numbers without decimals, others with
    up to 6 significant digits ("12345.6", "87234", "0.5")."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e16:
        return "%d" % value
    return "%.6g" % value


def to_int(value):
    """A number or its text as an int (truncated), 0 when it is none."""
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def parse_fields(line):
    """The key=value words of a result line `TAG key=value ...` ("LATENCY n=3
    p50_ms=1.20 ...") as a dict of texts; the tag and words without = are left out."""
    fields = {}
    for word in line.split()[1:]:
        key, sep, value = word.partition("=")
        if sep:
            fields[key] = value
    return fields


def utc_time():
    """The time now as the reports' headers give it: "2026-12-05 14:04 UTC"."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def safe_name(label):
    """A label as a file name: anything but letters, digits and =_- becomes _."""
    return re.sub(r"[^A-Za-z0-9=_-]", "_", label)


def read_text(path):
    """A file's text ("" when it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


# ---------------------------------------------------------------- the report


class Report:
    """Lines printed on stdout and, when a path is given, appended to a report file
    (truncated when the Report is made), plus the PROBLEMS found along the way."""

    def __init__(self, path=None):
        self.path = path
        self.problems = []
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").close()

    def say(self, line=""):
        """Prints a line and keeps it in the report."""
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as handle:
                handle.write(line + "\n")

    def problem(self, message):
        """Lists a problem for the end of the report and says it now."""
        self.problems.append(message)
        self.say("  PROBLEM: %s" % message)

    def section(self, title, warn_busy=False):
        """An empty line and `== title [load average L]`; with warn_busy, a note when
        the load average is above the core count."""
        self.say("")
        self.say("== %s [load average %s]" % (title, loadavg(1)))
        if warn_busy and busy():
            self.say("  (load average above %d cores: noisy figures)" % cores())

    def warn_if_busy(self):
        """A header's warning when the machine is already busy (load average above the
        core count)."""
        if busy():
            self.say("WARNING: the machine is already busy (load average above %d cores): expect noisy figures"
                     % cores())

    def check_alive(self, proc, label):
        """True while a server runs; else a problem "LABEL (pid P) is no longer running;
        its stderr ends: ..." and False."""
        if proc.alive():
            return True
        self.problem("%s (pid %d) is no longer running; its stderr ends: %s"
                     % (label, proc.pid, proc.stderr_tail(3)))
        return False

    def stop_checked(self, proc, label, stopped_label=None, grace=15.0):
        """Stops a server as an operator would (SIGTERM) and says how it went: a problem
        when it had to be killed after grace seconds, the line "  STOPPED_LABEL stopped
        by SIGTERM in S s, exit status N" (stopped_label: label by default), and a problem
        when N (as a shell reports it) is not 0. Returns N."""
        status, seconds, killed = stop(proc, grace=grace)
        if killed:
            self.problem("%s did not exit within %g s of SIGTERM; killed" % (label, grace))
        status = exit_status(status)
        self.say("  %s stopped by SIGTERM in %.1f s, exit status %s" % (stopped_label or label, seconds, status))
        if status != 0:
            self.problem("%s exited with status %s after SIGTERM" % (label, status))
        return status

    def table(self, fmt, header, rows, rule=None):
        """Says a table: fmt % header, then rule (a row of dashes, if given), then
        fmt % row for each row."""
        self.say(fmt % tuple(header))
        if rule is not None:
            self.say(fmt % tuple(rule))
        for row in rows:
            self.say(fmt % tuple(row))

    def print_problems(self, none_text="PROBLEMS: none"):
        """The PROBLEMS list (or none_text when there were none)."""
        self.say("")
        if not self.problems:
            self.say(none_text)
            return
        self.say("PROBLEMS:")
        for message in self.problems:
            self.say("  - %s" % message)


# Errors from writing to a closed pipe (`scripts/bench | head`) end the driver quietly.
def _quiet_broken_pipe(kind, value, trace):
    if isinstance(value, OSError) and value.errno == errno.EPIPE:
        cleanup()
        os._exit(141)
    sys.__excepthook__(kind, value, trace)


sys.excepthook = _quiet_broken_pipe
