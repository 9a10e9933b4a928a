"""The clients of scripts/bench-delivery (Python 3, standard library only).

scripts/bench-delivery runs one process per section:

    python3 scripts/delivery_clients.py latency  PORT JOBS WATCHERS NUMBER
    python3 scripts/delivery_clients.py fanout   PORT SERVER_PID CLIENTS PER_JOB WARMUP WINDOW NUMBER
    python3 scripts/delivery_clients.py hold     PORT SERVER_PID STREAMS WATCHED BLOCKERS NUMBER OPEN_LIMIT
    python3 scripts/delivery_clients.py webhooks PORT JOBS CLIENTS NUMBER SECRET

Each prints one line of key=value figures starting with LATENCY, FANOUT, HOLD or
WEBHOOKS (the driver reads it), then up to five lines "ERROR ..." (the first errors).
The SSE clients are asyncio protocols on keep-alive connections (Conn below); the
webhook receiver is an http.server thread. Only 127.0.0.1 is contacted.
"""
import asyncio
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import resource
import sys
import threading
import time
from datetime import datetime, timezone

# No __pycache__ beside the scripts.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import benchkit as bk  # noqa: E402

HOST = "127.0.0.1"


def parse_time(text):
    """An RFC 3339 UTC time as the server writes it ("2026-12-01T03:18:25.826Z")."""
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            pass
    raise ValueError("not an RFC 3339 UTC time: %r" % text)


def proc_kb(pid, key):
    """A field of /proc/PID/status in kB, -1 when unknown."""
    value = bk.proc_kb(pid, key)
    return -1 if value is None else value


def proc_cpu_s(pid):
    """utime + stime of a process (all threads), in seconds."""
    return bk.cpu_ms(pid) / 1000.0


def self_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Conn(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection: a request at a time; answers with
    Content-Length, chunked (text/event-stream ones parsed into events as they come)
    or delimited by the close."""

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.waiter = None
        self.lost = False
        self.state = "idle"
        self.unexpected = 0

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.lost = True
        w = self.waiter
        if w is not None and not w.done():
            if self.state == "close-body":
                self._finish()
            else:
                w.set_exception(ConnectionError("connection closed (%s) while reading %s" % (exc, self.state)))

    def close(self):
        if self.transport is not None:
            self.transport.close()

    def send(self, method, target, headers=None, on_head=None, on_event=None):
        self.waiter = asyncio.get_running_loop().create_future()
        if self.lost:
            self.waiter.set_exception(ConnectionError("connection already closed"))
            return self.waiter
        self.state, self.status, self.headers = "head", 0, {}
        self.body, self.sse, self.is_sse, self.events = bytearray(), bytearray(), False, 0
        self.on_head, self.on_event = on_head, on_event
        lines = ["%s %s HTTP/1.1" % (method, target), "Host: %s" % HOST]
        lines += ["%s: %s" % kv for kv in (headers or {}).items()]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return self.waiter

    def _finish(self):
        self.state = "idle"
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.status, self.headers, bytes(self.body)))

    def data_received(self, data):
        now = time.time()
        self.buf += data
        try:
            self._parse(now)
        except Exception as e:  # a malformed answer: give up the connection
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ValueError("bad answer: %r" % e))
            self.transport.abort()

    def _parse(self, now):
        buf = self.buf
        while buf:
            st = self.state
            if st == "head":
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    return
                lines = bytes(buf[:i]).decode("latin-1").split("\r\n")
                del buf[:i + 4]
                self.status = int(lines[0].split(" ", 2)[1])
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    self.headers[k.strip().lower()] = v.strip()
                self.is_sse = self.headers.get("content-type", "").startswith("text/event-stream")
                if self.on_head:
                    self.on_head(now, self.status, self.headers)
                if "chunked" in self.headers.get("transfer-encoding", "").lower():
                    self.state = "size"
                elif "content-length" in self.headers:
                    self.remaining = int(self.headers["content-length"])
                    self.state = "body"
                    if self.remaining == 0:
                        self._finish()
                else:
                    self.state = "close-body"
            elif st == "size":
                i = buf.find(b"\r\n")
                if i < 0:
                    return
                size = int(bytes(buf[:i]).split(b";")[0], 16)
                del buf[:i + 2]
                if size == 0:
                    self.state = "trailer"
                else:
                    self.remaining, self.state = size, "data"
            elif st == "data":
                n = min(self.remaining, len(buf))
                piece = bytes(buf[:n])
                del buf[:n]
                self.remaining -= n
                if self.is_sse:
                    self._sse(piece, now)
                else:
                    self.body += piece
                if self.remaining == 0:
                    self.state = "crlf"
            elif st == "crlf":
                if len(buf) < 2:
                    return
                del buf[:2]
                self.state = "size"
            elif st == "trailer":
                i = buf.find(b"\r\n")
                if i < 0:
                    return
                del buf[:i + 2]
                if i == 0:
                    self._finish()
            elif st == "body":
                n = min(self.remaining, len(buf))
                self.body += buf[:n]
                del buf[:n]
                self.remaining -= n
                if self.remaining == 0:
                    self._finish()
            elif st == "close-body":
                self.body += buf
                buf.clear()
            else:  # bytes with no request waiting
                self.unexpected += len(buf)
                buf.clear()

    def _sse(self, piece, now):
        self.sse += piece.replace(b"\r\n", b"\n")
        while True:
            i = self.sse.find(b"\n\n")
            if i < 0:
                return
            block = bytes(self.sse[:i])
            del self.sse[:i + 2]
            kind, data, event = "message", [], False
            for line in block.split(b"\n"):
                if not line or line.startswith(b":"):
                    continue
                field, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                event = True
                if field == b"event":
                    kind = value.decode()
                elif field == b"data":
                    data.append(value)
            if event:
                self.events += 1
                if self.on_event:
                    self.on_event(now, kind, b"\n".join(data))


async def connect(port, timeout=20):
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(loop.create_connection(Conn, HOST, port), timeout)
    return conn


async def call(conn, method, target, headers=None, timeout=30, **kw):
    return await asyncio.wait_for(conn.send(method, target, headers, **kw), timeout)


async def status_doc(port):
    conn = await connect(port, 10)
    try:
        st, _, body = await call(conn, "GET", "/status", timeout=10)
    finally:
        conn.close()
    if st != 200:
        raise RuntimeError("GET /status answered %d" % st)
    return json.loads(body)


async def submit(conn, number, headers=None):
    h = {"Prefer": "respond-async"}
    h.update(headers or {})
    st, hd, body = await call(conn, "GET", "/is_prime?possible_prime=%d" % number, h)
    if st != 202 or not hd.get("location"):
        raise RuntimeError("submit answered %d %r" % (st, body[:120]))
    return hd["location"]


def ms(v):
    return v * 1000.0


# ------------------------------------------------------------ 1. latency

async def latency(port, jobs, watchers, number):
    bk.raise_nofile(watchers + 100)
    errors, lat, spreads, states = [], [], [], {}
    late = missing = 0
    start = time.monotonic()
    deadline = start + 240
    ctl = await connect(port)
    pool = list(await asyncio.gather(*[connect(port) for _ in range(watchers)]))
    done_jobs = 0
    for j in range(jobs):
        if time.monotonic() > deadline:
            errors.append("overall deadline (240 s) reached after %d jobs" % j)
            break
        try:
            if ctl.lost:
                ctl = await connect(port)
            loc = await submit(ctl, number)
        except Exception as e:
            errors.append("job %d: submit: %r" % (j, e))
            ctl.close()
            ctl = await connect(port)
            continue
        recs = [{} for _ in pool]

        def handlers(rec):
            def on_head(now, status, headers):
                rec["head"] = now

            def on_event(now, kind, data):
                if kind == "state":
                    d = json.loads(data)
                    if d.get("state") in bk.JOB_END_STATES:
                        rec["final"], rec["updated"], rec["state"] = now, d.get("updated"), d.get("state")
            return on_head, on_event

        futs = []
        for c, rec in zip(pool, recs):
            h, e = handlers(rec)
            futs.append(c.send("GET", loc + "/events", None, on_head=h, on_event=e))
        try:
            results = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 60)
        except asyncio.TimeoutError:
            results = ["timeout"] * len(futs)
            errors.append("job %d (%s): its event streams did not end within 60 s" % (j, loc))
        finals = []
        for k, (res, rec) in enumerate(zip(results, recs)):
            if isinstance(res, BaseException) or res == "timeout":
                if res != "timeout":
                    errors.append("job %d watcher %d: %r" % (j, k, res))
            elif res[0] != 200:
                errors.append("job %d watcher %d: /events answered %d" % (j, k, res[0]))
            if "final" not in rec:
                missing += 1
                continue
            states[rec["state"]] = states.get(rec["state"], 0) + 1
            end = parse_time(rec["updated"])
            if rec.get("head", end) >= end:
                late += 1
                continue
            lat.append(rec["final"] - end)
            finals.append(rec["final"])
        if finals:
            spreads.append(max(finals) - min(finals))
            done_jobs += 1
        for k, c in enumerate(pool):  # a connection cut or left mid-answer is replaced
            if c.lost or c.state != "idle":
                c.close()
                pool[k] = await connect(port)
    for c in pool + [ctl]:
        c.close()
    print("LATENCY n=%d jobs=%d late=%d missing=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f min_ms=%.2f "
          "spread_p50_ms=%.2f spread_max_ms=%.2f states=%s errors=%d seconds=%.1f"
          % (len(lat), done_jobs, late, missing, ms(bk.percentile(lat, 50)), ms(bk.percentile(lat, 99)),
             ms(max(lat)) if lat else float("nan"), ms(min(lat)) if lat else float("nan"),
             ms(bk.percentile(spreads, 50)), ms(max(spreads)) if spreads else float("nan"),
             ",".join("%s:%d" % kv for kv in sorted(states.items())) or "-",
             len(errors), time.monotonic() - start))
    for e in errors[:5]:
        print("ERROR " + e)


# ------------------------------------------------------------ 2. fan-out

async def fanout(port, pid, clients, per_job, warmup, window, number):
    bk.raise_nofile(clients + 200)
    loop = asyncio.get_running_loop()
    tickets = asyncio.Queue()
    errors, statuses = [], {}
    counters = {"events": 0, "streams": 0, "jobs": 0}
    t0 = time.time()
    nb = warmup + window + 2
    buckets = [0] * nb
    stop = False

    def on_event(now, kind, data):
        i = int(now - t0)
        if 0 <= i < nb:
            buckets[i] += 1

    def error(text):
        if len(errors) < 10000:
            errors.append(text)

    async def submitter():
        conn = await connect(port)
        while not stop:
            if tickets.qsize() >= clients:
                await asyncio.sleep(0.005)
                continue
            try:
                if conn.lost:
                    conn = await connect(port)
                loc = await submit(conn, number)
                counters["jobs"] += 1
                for _ in range(per_job):
                    tickets.put_nowait(loc)
            except Exception as e:
                error("submit: %r" % e)
                conn.close()
                await asyncio.sleep(0.05)
                conn = await connect(port)
        conn.close()

    async def watcher(i, sem):
        async with sem:
            conn = await connect(port)
        try:
            while not stop:
                loc = await tickets.get()
                try:
                    if conn.lost:
                        conn = await connect(port)
                    st, hd, _ = await call(conn, "GET", loc + "/events", timeout=60, on_event=on_event)
                    statuses[st] = statuses.get(st, 0) + 1
                    if st != 200:
                        error("/events answered %d" % st)
                    counters["streams"] += 1
                    if hd.get("connection", "").lower() == "close":
                        conn.close()
                        conn = await connect(port)
                except (ConnectionError, OSError, ValueError, asyncio.TimeoutError) as e:
                    error("watcher %d: %r" % (i, e))
                    conn.close()
                    await asyncio.sleep(0.05)
                    conn = await connect(port)
        finally:
            conn.close()

    sem = asyncio.Semaphore(64)
    tasks = [loop.create_task(submitter()) for _ in range(2)]
    tasks += [loop.create_task(watcher(i, sem)) for i in range(clients)]
    await asyncio.sleep(warmup)
    c0, s0, st0, j0 = self_cpu_s(), proc_cpu_s(pid), counters["streams"], counters["jobs"]
    await asyncio.sleep(window)
    c1, s1, st1, j1 = self_cpu_s(), proc_cpu_s(pid), counters["streams"], counters["jobs"]
    stop = True
    await asyncio.sleep(1.1)  # lets the last second's bucket fill
    for t in tasks:
        t.cancel()
    for r in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(r, Exception):  # a client that could not connect at all
            error("client: %r" % r)
    per_second = buckets[warmup:warmup + window]
    total = sum(per_second)
    print("FANOUT clients=%d events=%d events_per_s=%.0f min_per_s=%d median_per_s=%d max_per_s=%d "
          "streams=%d streams_per_s=%.0f events_per_stream=%.2f jobs=%d jobs_per_s=%.1f "
          "client_cpu_pct=%.0f server_cpu_pct=%.0f statuses=%s errors=%d window_s=%d"
          % (clients, total, total / window, min(per_second), bk.percentile(per_second, 50), max(per_second),
             st1 - st0, (st1 - st0) / window, (total / (st1 - st0)) if st1 > st0 else float("nan"),
             j1 - j0, (j1 - j0) / window, 100 * (c1 - c0) / window, 100 * (s1 - s0) / window,
             ",".join("%d:%d" % kv for kv in sorted(statuses.items())) or "-", len(errors), window))
    print("PER_SECOND " + " ".join(str(v) for v in per_second))
    for e in errors[:5]:
        print("ERROR " + e)


# ------------------------------------------------------------ 3. many open streams

async def hold(port, pid, streams, watched, blockers, number, open_limit):
    limit = bk.raise_nofile(streams + 500)
    if limit < streams + 100:
        print("ERROR the client's open-file limit is %d, below %d streams" % (limit, streams))
    loop = asyncio.get_running_loop()
    errors = []
    start = time.monotonic()
    ctl = await connect(port)
    locs = [await submit(ctl, number) for _ in range(blockers)]
    watched_locs = [await submit(ctl, number) for _ in range(watched)]
    locs += watched_locs
    await asyncio.sleep(1)
    conns_before = (await status_doc(port)).get("connections", -1)
    out = {"rss_before_kb": proc_kb(pid, "VmRSS"), "hwm_before_kb": proc_kb(pid, "VmHWM"),
           "conns_before": conns_before}

    async def open_streams(rnd):
        """Opens `streams` event streams (64 connecting at once); they stay open."""
        held, flags = [], {"closing": False, "ended_early": 0}

        def on_stream_end(f):
            if not f.cancelled():
                f.exception()  # retrieved, so asyncio does not warn about it
            if not flags["closing"]:
                flags["ended_early"] += 1

        async def open_one(i, sem):
            async with sem:
                c = await connect(port)
                held.append(c)
                first = loop.create_future()

                def on_event(now, kind, data):
                    if not first.done():
                        first.set_result(now)
                fut = c.send("GET", watched_locs[i % watched] + "/events", on_event=on_event)
                fut.add_done_callback(on_stream_end)
                fut.add_done_callback(lambda f: first.done() or first.set_exception(
                    ConnectionError("the stream ended before its first event")))
                await asyncio.wait_for(first, 30)

        sem = asyncio.Semaphore(64)
        t_open = time.monotonic()
        tasks = [loop.create_task(open_one(i, sem)) for i in range(streams)]
        done, pending = await asyncio.wait(tasks, timeout=open_limit)
        for t in pending:
            t.cancel()
        if pending:
            errors.append("round %d: %d streams were not open within %d s" % (rnd, len(pending), open_limit))
            await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            if t.exception() is not None and len(errors) < 1000:
                errors.append("round %d: open: %r" % (rnd, t.exception()))
        opened = sum(1 for t in done if t.exception() is None)
        return held, flags, opened, time.monotonic() - t_open

    async def close_streams(held, flags):
        """Hangs up every stream; waits (at most 30 s) until /status counts them gone."""
        flags["closing"] = True
        t_close = time.monotonic()
        for c in held:
            c.close()
        conns = -1
        while time.monotonic() - t_close < 30:
            await asyncio.sleep(0.5)
            try:
                conns = (await status_doc(port)).get("connections", -1)
            except Exception as e:
                errors.append("status after close: %r" % e)
                break
            if 0 <= conns <= conns_before + 1:
                break
        return conns, time.monotonic() - t_close

    # Round 1: measured.
    held, flags, opened, open_s = await open_streams(1)
    await asyncio.sleep(2)
    out.update(opened=opened, open_s=open_s, rss_open_kb=proc_kb(pid, "VmRSS"), hwm_open_kb=proc_kb(pid, "VmHWM"),
               conns_open=(await status_doc(port)).get("connections", -1),
               open_at_measure=opened - flags["ended_early"])
    states = []
    for loc in watched_locs:
        st, _, body = await call(ctl, "GET", loc)
        states.append(json.loads(body).get("state", "?") if st in (200, 303) else str(st))
    await asyncio.sleep(5)
    out.update(rss_5s_kb=proc_kb(pid, "VmRSS"), open_5s_later=opened - flags["ended_early"],
               client_rss_kb=proc_kb(os.getpid(), "VmRSS"))
    ended_early = flags["ended_early"]
    conns, close_s = await close_streams(held, flags)
    del held
    await asyncio.sleep(2)
    out.update(conns_closed=conns, close_s=close_s, rss_closed_kb=proc_kb(pid, "VmRSS"),
               hwm_closed_kb=proc_kb(pid, "VmHWM"))
    # Rounds 2 and 3: the same again; RSS that stops growing is memory the allocator
    # kept for reuse, RSS that grows by the same amount each round is a leak.
    closed = [out["rss_closed_kb"]]
    for rnd in (2, 3):
        held, flags, n, _ = await open_streams(rnd)
        await asyncio.sleep(2)
        out["opened%d" % rnd], out["rss_open%d_kb" % rnd] = n, proc_kb(pid, "VmRSS")
        ended_early += flags["ended_early"]
        out["conns_closed%d" % rnd], _ = await close_streams(held, flags)
        del held
        await asyncio.sleep(2)
        closed.append(proc_kb(pid, "VmRSS"))
    out.update(rss_closed_rounds_kb=",".join(map(str, closed)), rss_closed3_kb=closed[-1],
               rss_closed2_kb=closed[1], hwm_closed3_kb=proc_kb(pid, "VmHWM"))
    cancelled = other = 0
    if ctl.lost:
        ctl = await connect(port)
    for loc in locs:
        try:
            st, _, _ = await call(ctl, "DELETE", loc, timeout=10)
            if st in (200, 202, 204):
                cancelled += 1
            elif st != 409:
                other += 1
        except Exception as e:
            errors.append("cancel: %r" % e)
            ctl.close()
            ctl = await connect(port)
    await asyncio.sleep(1)
    ctl.close()
    out.update(rss_cancelled_kb=proc_kb(pid, "VmRSS"), ended_early=ended_early, cancelled=cancelled,
               cancel_other=other, watched_states=",".join(states), wanted=streams, errors=len(errors),
               seconds="%.1f" % (time.monotonic() - start), open_s="%.1f" % open_s, close_s="%.1f" % close_s)
    print("HOLD " + " ".join("%s=%s" % kv for kv in out.items()))
    for e in errors[:5]:
        print("ERROR " + e)


# ------------------------------------------------------------ 4. webhooks

def webhooks(port, jobs, clients, number, secret):
    key = secret.encode()
    arrivals, bad, lock = {}, [], threading.Condition()

    class Receiver(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            t = time.time()  # the head has been read
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            wid, ts = self.headers.get("webhook-id", ""), self.headers.get("webhook-timestamp", "")
            mac = hmac.new(key, ("%s.%s." % (wid, ts)).encode() + body, hashlib.sha256).digest()
            good = "v1," + base64.b64encode(mac).decode()
            ok = good in (self.headers.get("webhook-signature") or "").split()
            try:
                job = json.loads(body).get("id") or wid
            except ValueError:
                job = wid
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with lock:
                if not ok:
                    bad.append(wid)
                arrivals.setdefault(job, t)
                lock.notify_all()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    url = "http://%s:%d/hook" % (HOST, server.server_address[1])
    errors, ids, elock = [], [], threading.Lock()
    per = bk.shares(jobs, clients)
    deadline = time.monotonic() + 150

    def client(i):
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        for _ in range(per[i]):
            if time.monotonic() > deadline:
                with elock:
                    errors.append("client %d: overall deadline (150 s) reached" % i)
                break
            try:
                conn.request("GET", "/is_prime?possible_prime=%d" % number,
                             headers={"Prefer": "respond-async", "Callback-URL": url})
                r = conn.getresponse()
                body = r.read()
                loc = r.getheader("Location")
                if r.status != 202 or not loc:
                    with elock:
                        errors.append("submit with Callback-URL answered %d %r" % (r.status, body[:160]))
                    continue
                job = loc.rstrip("/").rsplit("/", 1)[1]
                with elock:
                    ids.append(job)
                with lock:
                    lock.wait_for(lambda: job in arrivals, timeout=30)
                    if job not in arrivals:
                        with elock:
                            errors.append("no webhook for job %s within 30 s" % job)
            except Exception as e:
                with elock:
                    errors.append("client %d: %r" % (i, e))
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
        conn.close()

    start = time.monotonic()
    bk.run_threads(clients, client)
    lat, states = [], {}
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    for job in ids:
        if job not in arrivals:
            continue
        conn.request("GET", "/jobs/%s" % job)
        r = conn.getresponse()
        body = r.read()
        if r.status not in (200, 303):
            errors.append("GET /jobs/%s answered %d" % (job, r.status))
            continue
        doc = json.loads(body)
        states[doc.get("state")] = states.get(doc.get("state"), 0) + 1
        lat.append(arrivals[job] - parse_time(doc["updated"]))
    conn.close()
    server.shutdown()
    print("WEBHOOKS n=%d submitted=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f min_ms=%.2f bad_signatures=%d "
          "states=%s errors=%d seconds=%.1f"
          % (len(lat), len(ids), ms(bk.percentile(lat, 50)), ms(bk.percentile(lat, 99)),
             ms(max(lat)) if lat else float("nan"), ms(min(lat)) if lat else float("nan"), len(bad),
             ",".join("%s:%d" % kv for kv in sorted(states.items())) or "-", len(errors),
             time.monotonic() - start))
    for e in errors[:5]:
        print("ERROR " + e)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, port, a = argv[0], int(argv[1]), argv[2:]
    if cmd == "latency" and len(a) == 3:
        asyncio.run(latency(port, int(a[0]), int(a[1]), int(a[2])))
    elif cmd == "fanout" and len(a) == 6:
        asyncio.run(fanout(port, *map(int, a)))
    elif cmd == "hold" and len(a) == 6:
        asyncio.run(hold(port, *map(int, a)))
    elif cmd == "webhooks" and len(a) == 4:
        webhooks(port, int(a[0]), int(a[1]), int(a[2]), a[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
