-- wrk script for bench/selling.py: POSTs a JSON body, optionally with a different `mercato_cart` cookie per
-- request, counts the response statuses and prints one BENCH_JSON line (report.lua's fields plus `statuses` and
-- the first body of every status other than 201) when wrk is done.
--
--   wrk -t T -c C -d CAP -s selling.lua URL -- <path> <body file> <cookie file or -> <threads> <once|cycle>
--
-- The cookie file holds one `mercato_cart` value a line; thread k of T takes lines k, k + T, k + 2T, ...
-- `once`: every cookie is sent exactly once (one checkout per prepared cart); a thread stops as soon as all of its
-- cookies are answered and then creates the file <cookie file>.done-<thread number> (see finish() below).
-- `cycle`: the thread's cookies are used round-robin for -d seconds.
-- The body may contain {n}, replaced by a number unique in the run (a distinct guest email per order).
-- `active_s` in the JSON is the time from the first request sent to the last response received (LuaJIT's FFI
-- reads CLOCK_MONOTONIC): the checkouts' own duration, however wrk was stopped.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } selling_timespec;
  int clock_gettime(int clock, selling_timespec *tp);
]]
local clock = ffi.new("selling_timespec")

-- seconds on CLOCK_MONOTONIC (the same clock in every thread)
local function now()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) / 1e9
end

local threads = {}
local count = 0

function setup(thread)
  thread:set("id", count)
  count = count + 1
  table.insert(threads, thread)
end

function init(args)
  path = args[1]
  local file = assert(io.open(args[2], "r"))
  body = file:read("*a")
  file:close()
  templated = body:find("{n}", 1, true) ~= nil
  local nthreads = tonumber(args[4])
  once = args[5] == "once"
  cookies = {}
  if args[3] ~= "-" then
    local i = 0
    for line in io.lines(args[3]) do
      if line ~= "" then
        if i % nthreads == id then
          table.insert(cookies, line)
        end
        i = i + 1
      end
    end
  end
  marker = args[3] .. ".done-" .. id
  sent = 0
  armed = 0
  answered = 0
  if once and #cookies == 0 then
    finish()
  end
  statuses = {}
  samples = {}
end

function delay()
  -- all of this thread's carts are checked out: keep the connection idle until the last answers arrive
  if once and sent + armed >= #cookies then
    return 3600000
  end
  armed = armed + 1
  return 0
end

function request()
  -- wrk calls request() once more, outside the event loop, to check the script (thread 1 only): that call is
  -- not preceded by delay() and must not use up a cart
  if armed == 0 then
    return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
  end
  armed = armed - 1
  sent = sent + 1
  first = first or now()
  local headers = {["Content-Type"] = "application/json"}
  if #cookies > 0 then
    headers["Cookie"] = "mercato_cart=" .. cookies[((sent - 1) % #cookies) + 1]
  end
  local payload = body
  if templated then
    payload = body:gsub("{n}", id .. "-" .. sent)
  end
  return wrk.format("POST", path, headers, payload)
end

function response(status, headers, body)
  answered = answered + 1
  last = now()
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status ~= 201 and samples[key] == nil then
    samples[key] = string.sub(body or "", 1, 400)
  end
  if once and answered == #cookies then
    finish()
  end
end

-- wrk's main thread sleeps for -d whatever the threads do: bench/selling.py waits for every thread's marker file,
-- then sends wrk SIGINT, which ends the run at once (the reported duration is then the checkouts' time)
function finish()
  local file = io.open(marker, "w")
  if file then
    file:close()
  end
  wrk.thread:stop()
end

local function quote(s)
  s = s:gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("[%c]", function(c) return string.format("\\u%04x", c:byte()) end)
  return '"' .. s .. '"'
end

local function object(t)
  local parts = {}
  for k, v in pairs(t) do
    table.insert(parts, quote(k) .. ":" .. (type(v) == "number" and string.format("%d", v) or quote(v)))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local merged, bodies = {}, {}
  local started, ended = nil, nil
  for _, thread in ipairs(threads) do
    local first, last = thread:get("first"), thread:get("last")
    if first and (started == nil or first < started) then started = first end
    if last and (ended == nil or last > ended) then ended = last end
    for k, v in pairs(thread:get("statuses") or {}) do
      merged[k] = (merged[k] or 0) + v
    end
    for k, v in pairs(thread:get("samples") or {}) do
      bodies[k] = bodies[k] or v
    end
  end
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"bytes":%d,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f,"mean_ms":%.3f,"max_ms":%.3f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"statuses":%s,"samples":%s,' ..
    '"active_s":%.3f}\n',
    summary.requests, seconds, summary.requests / seconds, summary.bytes,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.status, e.timeout, object(merged), object(bodies),
    (started and ended) and (ended - started) or 0))
end
