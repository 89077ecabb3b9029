"""Every Lua script the worker runs in Redis, in one place, registered once per client.

Per series two keys share one hash tag, so Redis Cluster keeps them (and each script call over a chunk
of series of one slot) on one slot. PEEK reads them and computes what a batch changes; WRITE, once the
batch's records are delivered, stores that (worker/checkpoint.py):

    <prefix>:win:{<series_id>}   window state: one string (a hash whose field exceeds
                                 `hash-max-listpack-value`, 64 bytes by default, leaves the compact
                                 encoding and costs ~2x)
    <prefix>:det:{<series_id>}   detector state (incidents mode): the codec's bytes (worker/state/codec.py),
                                 starting with last_end_ms (int64 LE), the end of the newest window in it

Window state layout (little endian):
    n          int48   accepted events so far (the number of the next event)
    last_off   int64   the last Kafka offset applied to this series (-1: none)
    last_ts    int48   epoch ms of the last accepted event
    base_ts    int48   epoch ms of the oldest buffered event
    seg        int48   the number of the first event of the current segment (a gap starts a new one)
    interval   int48   the series' usual interval in ms (0: not known yet)
    registered int48   epoch ms until which the series registry counts this series (0: no registry)
    count      uint16  buffered events: at most window - 1, the events a next window needs
    features   uint8   values per event: state written for another model shape is started afresh
    values     count * value_bytes   float32, packed by Python, appended/trimmed as opaque bytes
    deltas     count - 1 unsigned LEB128 varints: ts[i] - ts[i-1] (2 bytes at a 1 s cadence)

The policy is worker/windows.py's and vrae_model/windowing.py's; the memory store implements the same,
and tests/integration pins them event for event.
"""

from typing import Final

WINDOW_HEADER_BYTES: Final = 47
REGISTERED_BYTES: Final = slice(38, 44)  # the header's `registered`: the one field that depends on the clock

# PEEK, read only: each event's outcome, every window that comes due, the series' detector state, and
# the window state the batch leads to, which WRITE stores later. KEYS: per series, in order, its window
# key and its detector key.
# ARGV: window, stride, value_bytes, gap_factor, interval_ms (a new series' starting interval),
# now_ms, registry_ms (0: no series registry), load_detector (0 no, 1 yes, 2 yes unless the worker's own
# copy is current), then per series ONE string: with load_detector 2 first the mark of the worker's copy
# of its detector state (24 bytes, worker/state/cache.py; all 0xff: none), then its events in offset
# order, each (offset int64 LE, ts_ms int64 LE, value bytes).
# Returns, per series: {statuses, flags, detector state or false (or 1: the stored state starts with the
# mark sent), new window state or false (nothing to write), then per due window: event position
# (0-based), values, start ts}. Status letters: a accepted,
# g accepted after a gap (a fresh segment), d duplicate, l late, r replayed (applied before). Flags: n
# the series has no state yet, f its registration is due for a refresh.
PEEK: Final = r"""
local HEADER = '<i6i8i6i6i6i6i6HB'
local HEADER_BYTES = 47
local T = tonumber(ARGV[1])
local stride = tonumber(ARGV[2])
local vb = tonumber(ARGV[3])
local gap_factor = tonumber(ARGV[4])
local interval0 = tonumber(ARGV[5])
local now_ms = tonumber(ARGV[6])
local registry_ms = tonumber(ARGV[7])
local load_detector = ARGV[8] ~= '0'
local MARK_BYTES = 0
if ARGV[8] == '2' then MARK_BYTES = 24 end
local NO_MARK = string.rep('\255', 24)
local FIRST = 8
local capacity = math.max(T - 1, 1)
local EVENT_BYTES = 16 + vb

local function read_varint(s, p)
  local x, mul = 0, 1
  while true do
    local b = string.byte(s, p)
    p = p + 1
    if b < 128 then return x + b * mul, p end
    x = x + (b - 128) * mul
    mul = mul * 128
  end
end

local function write_varint(x)
  if x < 128 then return string.char(x) end
  if x < 16384 then return string.char(x % 128 + 128, math.floor(x / 128)) end
  local out = {}
  while x >= 128 do
    out[#out + 1] = string.char(x % 128 + 128)
    x = math.floor(x / 128)
  end
  out[#out + 1] = string.char(x)
  return table.concat(out)
end

-- vrae_model.windowing.next_interval: 1/8 of the way towards the step, the step clipped at 4x
local function next_interval(interval, step)
  if interval <= 0 then return math.max(step, 1) end
  local clipped = math.min(step, 4 * interval)
  return math.max(interval + math.floor((clipped - interval) / 8), 1)
end

local function refresh_due(registered)
  return registry_ms > 0 and registered < now_ms + registry_ms / 2
end

local function peek_series(wkey, dkey, arg)
  local mark = string.sub(arg, 1, MARK_BYTES)
  local events = string.sub(arg, MARK_BYTES + 1)
  local n, last_off, last_ts, base_ts, seg, interval, registered, count, features, vals, deltas
  local raw = redis.call('GET', wkey)
  if raw then
    n, last_off, last_ts, base_ts, seg, interval, registered, count, features = struct.unpack(HEADER, raw)
    if features ~= vb / 4 then raw = false end
  end
  if raw then
    vals = string.sub(raw, HEADER_BYTES + 1, HEADER_BYTES + count * vb)
    deltas = string.sub(raw, HEADER_BYTES + count * vb + 1)
  else
    n, last_off, last_ts, base_ts, seg, interval, registered, count = 0, -1, 0, 0, 0, interval0, 0, 0
    vals, deltas = '', ''
  end

  local function ts_at(i)
    local t, p = base_ts, 1
    for _ = 1, i do
      local d
      d, p = read_varint(deltas, p)
      t = t + d
    end
    return t
  end

  local statuses = {}
  local out = {'', '', false, false}
  local changed = false
  for e = 0, #events / EVENT_BYTES - 1 do
    local at = e * EVENT_BYTES + 1
    local off, ts = struct.unpack('<i8i8', events, at)
    local status
    if off <= last_off then
      status = 'r'
    elseif n > 0 and ts <= last_ts then
      if ts < last_ts then status = 'l' else status = 'd' end
      last_off = off
      changed = true
    else
      status = 'a'
      if n > 0 then
        local step = ts - last_ts
        if gap_factor > 0 and interval > 0 and step > gap_factor * interval then
          status = 'g'
          seg, count, vals, deltas = n, 0, '', ''
        end
        interval = next_interval(interval, step)
      end
      vals = vals .. string.sub(events, at + 16, at + 15 + vb)
      if count > 0 then deltas = deltas .. write_varint(ts - last_ts) else base_ts = ts end
      count = count + 1
      n = n + 1
      last_ts = ts
      last_off = off
      changed = true
      local k = n - 1 - seg - (T - 1)
      -- count >= T: a longer window than the state was built for (new model) waits for enough events
      if k >= 0 and k % stride == 0 and count >= T then
        out[#out + 1] = e
        out[#out + 1] = string.sub(vals, (count - T) * vb + 1, count * vb)
        out[#out + 1] = ts_at(count - T)
      end
      while count > capacity do
        local d, p = read_varint(deltas, 1)
        base_ts = base_ts + d
        deltas = string.sub(deltas, p)
        vals = string.sub(vals, vb + 1)
        count = count - 1
      end
    end
    statuses[#statuses + 1] = status
  end

  out[1] = table.concat(statuses)
  if not raw then
    out[2] = 'n'
  elseif refresh_due(registered) then
    out[2] = 'f'
  end
  if refresh_due(registered) then
    registered = now_ms + registry_ms
    changed = true
  end
  if changed then
    out[4] = struct.pack(HEADER, n, last_off, last_ts, base_ts, seg, interval, registered, count, vb / 4) .. vals
             .. deltas
  end
  if load_detector then
    if MARK_BYTES > 0 and mark ~= NO_MARK and redis.call('GETRANGE', dkey, 0, MARK_BYTES - 1) == mark then
      out[3] = 1
    else
      out[3] = redis.call('GET', dkey)
    end
  end
  return out
end

local replies = {}
for s = 1, #KEYS / 2 do
  replies[s] = peek_series(KEYS[2 * s - 1], KEYS[2 * s], ARGV[FIRST + s])
end
return replies
"""

# WRITE, after the batch's records are delivered: the window states PEEK computed and the batch's detector
# states, each stored only if it is not older than the stored one (a window state by its last applied
# offset, a detector state by last_end_ms), so a repeated write (a retry, a client timeout whose script
# ran later, a slower worker after a rebalance) never rolls a series back. The window state is a
# deterministic function of the events up to its last offset, so the newest one is right whoever
# computed it. A detector state may come as the changed part only (worker/state/codec.py: most windows
# change its first 1.2 kB of 4.0 kB): that part overwrites the stored state's start where the stored
# state is still the one the worker changed (same mark, which includes its size), so the result is the
# whole new state. KEYS: per series its window key and its detector key. ARGV: ttl_ms, then per series
# its new window state ('' for none), its detector state or its changed part ('' for none), and for a
# part the mark of the state it changes ('' for a whole state), followed by KEEP_TTL where the worker
# set the key's TTL lately (the part then leaves it as it is). Returns the positions (1-based) of the
# series whose part could not be applied and whose state is not older than the stored one: the caller
# sends those whole.
KEEP_TTL: Final = b"k"
WRITE: Final = r"""
local ttl_ms = tonumber(ARGV[1])
local MARK_BYTES = 24
local whole_needed = {}
for s = 1, #KEYS / 2 do
  local wkey, dkey = KEYS[2 * s - 1], KEYS[2 * s]
  local window, detector, base = ARGV[3 * s - 1], ARGV[3 * s], ARGV[3 * s + 1]
  local keep_ttl = #base > MARK_BYTES
  if keep_ttl then base = string.sub(base, 1, MARK_BYTES) end
  if window ~= '' then
    local old = redis.call('GET', wkey)
    local _, new_off = struct.unpack('<i6i8', window)
    local newer = not old or #old < 47
    if not newer then
      local _, old_off = struct.unpack('<i6i8', old)
      newer = new_off >= old_off or string.byte(old, 47) ~= string.byte(window, 47)
    end
    if newer then
      redis.call('SET', wkey, window, 'PX', ttl_ms)
    end
  end
  if detector ~= '' then
    if base ~= '' and redis.call('GETRANGE', dkey, 0, #base - 1) == base then
      redis.call('SETRANGE', dkey, 0, detector)
      if not keep_ttl then redis.call('PEXPIRE', dkey, ttl_ms) end
    else
      local old = redis.call('GETRANGE', dkey, 0, 7)  -- its last_end_ms ('' for none)
      if #old < 8 or struct.unpack('<i8', detector) > struct.unpack('<i8', old) then
        if base == '' then
          redis.call('SET', dkey, detector, 'PX', ttl_ms)
        else
          whole_needed[#whole_needed + 1] = s
        end
      end
    end
  end
end
return whole_needed
"""

# The series registry (VRAE_WINDOW__MAX_SERIES): one sorted set, member = series id, score = the epoch
# ms until which it counts (the worker's clock: the set itself expires a TTL after its last use, by
# Redis's). KEYS: the registry. ARGV: now_ms, ttl_ms, max_series, r, then r series ids whose
# registration is refreshed, then the new series ids asking to be admitted, in order.
# Returns {admitted ids..., then the number of series registered}. A series already registered (a retry)
# is admitted again; a refreshed one is registered whatever the count, since its state exists already.
ADMIT: Final = r"""
local registry = KEYS[1]
local now_ms = tonumber(ARGV[1])
local ttl_ms = tonumber(ARGV[2])
local until_ms = now_ms + ttl_ms
local max_series = tonumber(ARGV[3])
local refreshed = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', registry, '-inf', now_ms)
for i = 5, 4 + refreshed do
  redis.call('ZADD', registry, until_ms, ARGV[i])
end
local count = redis.call('ZCARD', registry)
local admitted = {}
for i = 5 + refreshed, #ARGV do
  local sid = ARGV[i]
  if redis.call('ZSCORE', registry, sid) then
    redis.call('ZADD', registry, until_ms, sid)
    admitted[#admitted + 1] = sid
  elseif count < max_series then
    redis.call('ZADD', registry, until_ms, sid)
    count = count + 1
    admitted[#admitted + 1] = sid
  end
end
redis.call('PEXPIRE', registry, ttl_ms)
admitted[#admitted + 1] = count
return admitted
"""
