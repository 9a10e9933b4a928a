-- wrk script used by scripts/bench for every wrk run.
--
-- 1. At the end of a run it prints one machine-readable line, so the bench script
--    never has to parse wrk's human units (us/ms/s, k/M):
--      BENCH requests=N seconds=S rps=R p50_us=A p99_us=B connect=C read=D write=E status=F timeout=G
--    `status` counts responses that were not 2xx or 3xx; the others are socket errors
--    and wrk's own 2 s timeouts.
--
-- 2. With BENCH_COSTLY_PATH and BENCH_COSTLY_PERCENT set in the environment, each
--    request asks for BENCH_COSTLY_PATH with that probability and for the URL's own
--    path otherwise: a mixed load in one wrk. Its latency figures then cover both
--    kinds of request together (wrk's response() cannot tell which request a
--    response belongs to), which is why scripts/bench measures the cheap requests'
--    latency under costly load with two concurrent wrk processes instead.

local costly_path = os.getenv("BENCH_COSTLY_PATH")
local costly_percent = tonumber(os.getenv("BENCH_COSTLY_PERCENT") or "")

if costly_path and costly_percent then
   local cheap_request, costly_request

   function init(args)
      -- Seeded per thread so that the threads do not draw the same sequence.
      math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
      cheap_request = wrk.format(nil, wrk.path)
      costly_request = wrk.format(nil, costly_path)
   end

   function request()
      if math.random() * 100 < costly_percent then
         return costly_request
      end
      return cheap_request
   end
end

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d seconds=%.3f rps=%.1f p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50), latency:percentile(99),
      e.connect, e.read, e.write, e.status, e.timeout))
end
