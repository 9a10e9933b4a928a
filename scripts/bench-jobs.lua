-- wrk script used by scripts/bench-jobs for every wrk run.
--
-- At the end of a run it prints one machine-readable line, as scripts/bench.lua does:
--   BENCH requests=N seconds=S rps=R p50_us=A p99_us=B connect=C read=D write=E status=F timeout=G unexpected=U last_unexpected=L
-- plus `unexpected`, the answers whose status is not BENCH_EXPECT (200 for the
-- synchronous runs, 202 for the submit runs; the default is 200), and the last such
-- status.

local expected = tonumber(os.getenv("BENCH_EXPECT") or "200")
local threads = {}
function setup(thread)
   table.insert(threads, thread)
end
unexpected = 0
last_unexpected = 0
function response(status, headers, body)
   if status ~= expected then
      unexpected = unexpected + 1
      last_unexpected = status
   end
end
function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   local bad, last = 0, 0
   for _, thread in ipairs(threads) do
      bad = bad + (thread:get("unexpected") or 0)
      local l = thread:get("last_unexpected") or 0
      if l ~= 0 then last = l end
   end
   io.write(string.format(
      "BENCH requests=%d seconds=%.3f rps=%.1f p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d unexpected=%d last_unexpected=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50), latency:percentile(99),
      e.connect, e.read, e.write, e.status, e.timeout, bad, last))
end
