-- wrk script: unique Meta status webhooks, HMAC-SHA256 signed, for the saturation figure.
--
--   WRK_SECRET=bench-webhook-hmac-secret taskset -c 1 wrk -t1 -c32 -d10s \
--       -s bench/webhook.lua http://127.0.0.1:PORT/webhook
--
-- `bench/saturation.py` runs it against the exporter and a bare ASGI endpoint, side by side.
-- Every request is a new message (its own wamid) on one of the fleet's channels, so no request
-- is a duplicate. Statuses cycle sent, delivered, read; all carry pricing.
-- Environment: WRK_SECRET (sign with X-Hub-Signature-256; unset: unsigned), WRK_CHANNELS (the
-- fleet's size, bench/fleet.py numbering; default 10000), WRK_TAG (makes the ids of one run
-- unlike another's against the same state file; default: the time and a random number),
-- WRK_RATE (requests a second for each wrk thread, sent to a schedule: `bench/openloop.py`;
-- unset: as fast as answers come). With a rate, `done` prints how many requests went out
-- more than 5 ms behind their slot: wrk times each request from when it was sent, so its
-- latencies hold for an open loop only while the server keeps up with the schedule.
--
-- LuaJIT has no SHA-256, so it is written here with its bit library: about 10 us a request,
-- which keeps one wrk thread far above what either server answers.

local bit = require("bit")
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local ror, rshift, lshift, tobit, tohex = bit.ror, bit.rshift, bit.lshift, bit.tobit, bit.tohex
local byte, char, rep, sub = string.byte, string.char, string.rep, string.sub

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
for i = 1, 64 do K[i] = tobit(K[i]) end
local INIT = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
              0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

local W = {}

-- One 64-byte block of `s` from 1-based offset `at` into the state `H` (8 words, in place).
local function compress(H, s, at)
  for j = 1, 16 do
    local a, b, c, d = byte(s, at, at + 3)
    W[j] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
    at = at + 4
  end
  for j = 17, 64 do
    local w15, w2 = W[j - 15], W[j - 2]
    local s0 = bxor(ror(w15, 7), ror(w15, 18), rshift(w15, 3))
    local s1 = bxor(ror(w2, 17), ror(w2, 19), rshift(w2, 10))
    W[j] = tobit(W[j - 16] + s0 + W[j - 7] + s1)
  end
  local a, b, c, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
  for j = 1, 64 do
    local t1 = h + bxor(ror(e, 6), ror(e, 11), ror(e, 25)) + bxor(band(e, f), band(bnot(e), g))
               + K[j] + W[j]
    local t2 = bxor(ror(a, 2), ror(a, 13), ror(a, 22)) + bxor(band(a, b), band(a, c), band(b, c))
    h, g, f, e = g, f, e, tobit(d + t1)
    d, c, b, a = c, b, a, tobit(t1 + t2)
  end
  H[1], H[2], H[3], H[4] = tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + c), tobit(H[4] + d)
  H[5], H[6], H[7], H[8] = tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h)
end

-- The state after `prefix` (whole blocks, already compressed) and then `s`, finished.
local function finish(state, prefix_len, s)
  local H = {state[1], state[2], state[3], state[4], state[5], state[6], state[7], state[8]}
  local bits = (prefix_len + #s) * 8
  local pad = (55 - #s) % 64
  -- The length's high word is zero: bodies stay far under 2^32 bits.
  local tail = char(0x80) .. rep("\0", pad) .. "\0\0\0\0"
    .. char(band(rshift(bits, 24), 255), band(rshift(bits, 16), 255),
            band(rshift(bits, 8), 255), band(bits, 255))
  local m = s .. tail
  for at = 1, #m, 64 do compress(H, m, at) end
  return H
end

local function raw(H)
  local out = {}
  for i = 1, 8 do
    local w = H[i]
    out[i] = char(band(rshift(w, 24), 255), band(rshift(w, 16), 255),
                  band(rshift(w, 8), 255), band(w, 255))
  end
  return table.concat(out)
end

local function hex(H)
  local out = {}
  for i = 1, 8 do out[i] = tohex(H[i]) end
  return table.concat(out)
end

-- HMAC-SHA256 with the key's inner and outer pad blocks compressed once.
local function hmac_signer(key)
  if #key > 64 then key = raw(finish(INIT, 0, key)) end
  key = key .. rep("\0", 64 - #key)
  local ipad, opad = {}, {}
  for i = 1, 64 do
    local k = byte(key, i)
    ipad[i], opad[i] = char(bxor(k, 0x36)), char(bxor(k, 0x5c))
  end
  local inner = {unpack(INIT)}
  local outer = {unpack(INIT)}
  compress(inner, table.concat(ipad), 1)
  compress(outer, table.concat(opad), 1)
  return function(message)
    return hex(finish(outer, 64, raw(finish(inner, 64, message))))
  end
end

local secret = os.getenv("WRK_SECRET")
local sign = secret and secret ~= "" and hmac_signer(secret) or nil
local channels = tonumber(os.getenv("WRK_CHANNELS") or "10000")
local tag = os.getenv("WRK_TAG") or (os.time() .. "x" .. math.random(1, 1e9))

local STATUSES = {"sent", "delivered", "read"}
local KINDS = {
  {"marketing", "regular", "true"}, {"utility", "regular", "true"},
  {"authentication", "regular", "true"}, {"service", "free_customer_service", "false"},
  {"utility", "free_customer_service", "false"}, {"marketing_lite", "regular", "true"},
}
local RECIPIENTS = {"4917612345678", "447700123456", "5511991234567", "919812345678",
                    "14155550123", "34612345678"}

thread_id = 0  -- global: `setup` sets it in each thread's own Lua state
local threads = 0
local all_threads = {}
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
  all_threads[threads] = thread
end

-- The schedule: slot k of a thread is due k / rate seconds after its first. Globals, so
-- `done` can read them from each thread.
paced, late, latest = 0, 0, 0
local rate = tonumber(os.getenv("WRK_RATE") or "0")
if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } wrk_timespec;
    int clock_gettime(int clock, wrk_timespec *t);
  ]]
  local ts = ffi.new("wrk_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local first, interval = nil, 1000 / rate
  function delay()
    local t = now_ms()
    first = first or t
    local wait = first + paced * interval - t
    paced = paced + 1
    if wait >= 0 then return wait end
    if -wait > 5 then late = late + 1 end
    if -wait > latest then latest = -wait end
    return 0
  end
end

function done(summary, latency, requests)
  if rate <= 0 then return end
  local n, behind, worst = 0, 0, 0
  for _, thread in ipairs(all_threads) do
    n = n + thread:get("paced")
    behind = behind + thread:get("late")
    worst = math.max(worst, thread:get("latest"))
  end
  io.write(string.format("schedule: %d paced, %d more than 5 ms behind, at most %.1f ms\n",
                         n, behind, worst))
end

local n = 0
function request()
  n = n + 1
  local channel = (n * 7919 + thread_id * 104729) % channels
  local kind = KINDS[n % #KINDS + 1]
  local body = '{"object":"whatsapp_business_account","entry":[{"id":"'
    .. (100000000000000 + channel % 1000) .. '","changes":[{"value":{"messaging_product":'
    .. '"whatsapp","metadata":{"display_phone_number":"49151' .. string.format("%07d", channel)
    .. '","phone_number_id":"' .. (200000000000000 + channel) .. '"},"statuses":[{"id":'
    .. '"wamid.bench.' .. tag .. '.' .. thread_id .. '.' .. n .. '","status":"'
    .. STATUSES[n % 3 + 1] .. '","timestamp":"' .. os.time() .. '","recipient_id":"'
    .. RECIPIENTS[n % #RECIPIENTS + 1] .. '","pricing":{"billable":' .. kind[3]
    .. ',"pricing_model":"PMP","category":"' .. kind[1] .. '","type":"' .. kind[2]
    .. '"}}]},"field":"messages"}]}]}'
  local headers = {["Content-Type"] = "application/json"}
  if sign then headers["X-Hub-Signature-256"] = "sha256=" .. sign(body) end
  return wrk.format("POST", nil, headers, body)
end
