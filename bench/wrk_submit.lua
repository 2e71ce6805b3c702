-- The HTTP path's clients (bench/http_load.py): wrk posts transfers to /transfers, single objects or arrays.
--
-- Every setting comes from the environment, set by http_load.py:
--   PAYMENTS_WRK_POOL     a file of "payer,payee,amount" lines drawn for the workload; each thread starts at its own
--                         place in it and gives every transfer an id of its own: TAG-THREAD-N
--   PAYMENTS_WRK_TARGETS  "host:port,host:port": the workers; threads are spread over them, as a load balancer would
--   PAYMENTS_WRK_TOKEN    the bearer token;  PAYMENTS_WRK_TAG  the ids' prefix;  PAYMENTS_WRK_BATCH  transfers per request
--   PAYMENTS_WRK_RATE     offered transfers per second over all PAYMENTS_WRK_THREADS (0: as fast as answered)
--   PAYMENTS_WRK_WAIT     seconds for ?wait= (0: none; the answer is then the 202, not the decision)
--   PAYMENTS_WRK_STOP_S   seconds after which no new request starts: wrk runs longer, so nothing is cut off in flight
-- An answer with Retry-After (429, 503, an array refused in part) pauses the thread's connections that long.
-- done() prints one JSON line: requests, non-2xx answers, socket errors, transfers the workers took (a 2xx single
-- request's one; an array's items not answered "refused"), latency percentiles in microseconds.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]]
local clock = ffi.new("bench_timespec")

local function now_s()
  ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

local threads = {}

function setup(thread)
  local targets = {}
  for target in string.gmatch(os.getenv("PAYMENTS_WRK_TARGETS"), "[^,]+") do
    local host, port = string.match(target, "^(.+):(%d+)$")
    targets[#targets + 1] = wrk.lookup(host, port)[1]
  end
  thread.addr = targets[(#threads % #targets) + 1]
  thread:set("index", #threads)
  threads[#threads + 1] = thread
end

local pool, position, counter = {}, 0, 0
taken = 0 -- a global, so that done() reads each thread's (thread:get)
local tag, batch, headers, path, interval, next_at, stop_at
local paused_until = 0 -- after an answer with Retry-After, this thread's connections wait as asked

function init(args)
  for line in io.lines(os.getenv("PAYMENTS_WRK_POOL")) do
    local payer, payee, amount = string.match(line, "^([^,]+),([^,]+),(%d+)$")
    pool[#pool + 1] = string.format('"payer":"%s","payee":"%s","amount":%s', payer, payee, amount)
  end
  position = (index * 7919) % #pool -- threads start apart in the pool
  tag = os.getenv("PAYMENTS_WRK_TAG") .. index .. "-"
  batch = tonumber(os.getenv("PAYMENTS_WRK_BATCH"))
  headers = { ["Authorization"] = "Bearer " .. os.getenv("PAYMENTS_WRK_TOKEN"), ["Content-Type"] = "application/json" }
  local wait = tonumber(os.getenv("PAYMENTS_WRK_WAIT"))
  path = wait > 0 and ("/transfers?wait=" .. wait) or "/transfers"
  local rate = tonumber(os.getenv("PAYMENTS_WRK_RATE"))
  interval = rate > 0 and (tonumber(os.getenv("PAYMENTS_WRK_THREADS")) * batch / rate) or 0
  stop_at = now_s() + tonumber(os.getenv("PAYMENTS_WRK_STOP_S"))
end

function response(status, headers, body)
  local retry_after = tonumber(headers["Retry-After"])
  if retry_after then -- a 429 or 503, or an array refused in part: back off, as a client should
    paused_until = math.max(paused_until, now_s() + retry_after)
  end
  if batch > 1 and status >= 200 and status < 300 then
    local _, refused = string.gsub(body, '"status":"refused"', "")
    taken = taken + batch - refused
  end
end

function delay()
  local now = now_s()
  if now >= stop_at then
    return 3600000 -- the run is over for this connection: no new request until wrk ends
  end
  if now < paused_until then
    return (paused_until - now) * 1000
  end
  if interval == 0 then
    return 0
  end
  local slot = math.max(next_at or now, now - 1) -- a late schedule catches up at most a second's requests
  next_at = slot + interval
  return math.max(0, (slot - now) * 1000)
end

function request()
  local items = {}
  for k = 1, batch do
    counter = counter + 1
    position = position % #pool + 1
    items[k] = '{"id":"' .. tag .. counter .. '",' .. pool[position] .. "}"
  end
  local body = batch > 1 and ("[" .. table.concat(items, ",") .. "]") or items[1]
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  local accepted = summary.requests - errors.status
  if tonumber(os.getenv("PAYMENTS_WRK_BATCH")) > 1 then -- done() runs apart from the threads: init() never ran here
    accepted = 0
    for _, thread in ipairs(threads) do
      accepted = accepted + thread:get("taken")
    end
  end
  io.write(string.format(
    '{"requests":%d,"non_2xx":%d,"accepted":%d,"timeouts":%d,"socket_errors":%d,"p50_us":%d,"p95_us":%d,' ..
    '"p99_us":%d,"max_us":%d}\n',
    summary.requests, errors.status, accepted, errors.timeout, errors.connect + errors.read + errors.write,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
