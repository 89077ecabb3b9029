"""Every Lua script the worker runs in Redis, in one place, registered once per client.

The window record is one string per series (key `<prefix>:w:{<series_id>}`, hash-tagged so Redis
Cluster keeps each call on one slot). A string beats a hash here: a hash whose field exceeds
`hash-max-listpack-value` (64 bytes by default) leaves the compact listpack encoding and costs ~2x.

Layout (little endian):
    n          int48   accepted events so far (the index of the next event)
    last_off   int64   the last Kafka offset applied to this series (-1: none)
    last_ts    int48   epoch ms of the last accepted event
    base_ts    int48   epoch ms of the oldest buffered event
    count      uint16  buffered events
    features   uint8   values per event: state written for another model shape is started afresh
    values     count * value_bytes   float32, packed by Python, appended/trimmed as opaque bytes
    deltas     count - 1 unsigned LEB128 varints: ts[i] - ts[i-1] (2 bytes at a 1 s cadence)
"""

from typing import Final

WINDOW_HEADER_BYTES: Final = 29

# KEYS: the window keys of the series in this call. One call applies a chunk of series, not one:
# per-command costs (client packing and parsing, Redis dispatch) were a third of the store's cost at
# 2 events per series per batch.
# ARGV: window, stride, capacity, value_bytes, ttl_ms, then per key, in KEYS order, ONE string of its
# events in offset order, each (offset int64 LE, ts_ms int64 LE, value bytes): one argument per series
# rather than three per event halves what the client packs and Redis parses.
# Returns one reply per key: {statuses, then per due window: event position (0-based), values, start
# ts}. Status letters: a accepted, d duplicate, l late, r replayed, u replay_unrecoverable; a leading
# '+' means this call created the series' state.
APPLY_EVENTS: Final = r"""
local HEADER = '<i6i8i6i6HB'
local HEADER_BYTES = 29
local T = tonumber(ARGV[1])
local stride = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local vb = tonumber(ARGV[4])
local ttl_ms = tonumber(ARGV[5])

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

local function is_due(k)
  return k >= T - 1 and (k - (T - 1)) % stride == 0
end

local EVENT_BYTES = 16 + vb

-- Applies the events packed in `events` to one series; returns its reply.
local function apply_series(key, events)
  local n_events = #events / EVENT_BYTES
  local n, last_off, last_ts, base_ts, count, features, vals, deltas
  local raw = redis.call('GET', key)
  if raw then
    n, last_off, last_ts, base_ts, count, features = struct.unpack(HEADER, raw)
    if features ~= vb / 4 then raw = false end
  end
  if raw then
    vals = string.sub(raw, HEADER_BYTES + 1, HEADER_BYTES + count * vb)
    deltas = string.sub(raw, HEADER_BYTES + count * vb + 1)
  else
    n, last_off, last_ts, base_ts, count, vals, deltas = 0, -1, 0, 0, 0, '', ''
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

  local function window_at(i)
    return string.sub(vals, (i - T + 1) * vb + 1, (i + 1) * vb)
  end

  local function find_ts(ts)
    local t, p = base_ts, 1
    for i = 0, count - 1 do
      if i > 0 then
        local d
        d, p = read_varint(deltas, p)
        t = t + d
      end
      if t == ts then return i end
      if t > ts then return nil end
    end
    return nil
  end

  local statuses = {}
  local out = {''}
  local changed = false
  for e = 0, n_events - 1 do
    local at = e * EVENT_BYTES + 1
    local off, ts = struct.unpack('<i8i8', events, at)
    local v = string.sub(events, at + 16, at + 15 + vb)
    local status
    if count > 0 and off <= last_off then
      local idx = find_ts(ts)
      if idx == nil then
        if n > count and ts < base_ts then status = 'u' else status = 'r' end
      else
        local k = n - (count - 1 - idx) - 1
        if not is_due(k) then
          status = 'r'
        elseif idx < T - 1 then
          status = 'u'
        else
          status = 'r'
          out[#out + 1] = e
          out[#out + 1] = window_at(idx)
          out[#out + 1] = ts_at(idx - T + 1)
        end
      end
    elseif count > 0 and ts <= last_ts then
      if ts < last_ts then status = 'l' else status = 'd' end
      last_off = off
      changed = true
    else
      vals = vals .. v
      if count > 0 then deltas = deltas .. write_varint(ts - last_ts) else base_ts = ts end
      count = count + 1
      n = n + 1
      last_ts = ts
      last_off = off
      changed = true
      status = 'a'
      -- count >= T: a longer window than the state was built for (new model) waits for enough events
      if is_due(n - 1) and count >= T then
        out[#out + 1] = e
        out[#out + 1] = window_at(count - 1)
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
  if changed then
    redis.call('SET', key, struct.pack(HEADER, n, last_off, last_ts, base_ts, count, vb / 4) .. vals .. deltas,
               'PX', ttl_ms)
  elseif count > 0 then
    redis.call('PEXPIRE', key, ttl_ms)
  end
  out[1] = table.concat(statuses)
  if not raw then out[1] = '+' .. out[1] end
  return out
end

local replies = {}
for k = 1, #KEYS do
  replies[k] = apply_series(KEYS[k], ARGV[5 + k])
end
return replies
"""

# KEYS: the detector keys (`<prefix>:d:{<series_id>}`) of a chunk of series. ARGV: ttl_ms, then the
# state bytes for each key, in KEYS order. A state starts with last_end_ms (int64 LE), the end of the
# newest window folded into it; each write happens only if that is newer than the stored one, so a
# replay or a slower worker after a rebalance never rolls a series' score history back. Returns how
# many states were written.
SAVE_DETECTOR_STATE: Final = r"""
local ttl_ms = tonumber(ARGV[1])
local written = 0
for k = 1, #KEYS do
  local new = ARGV[k + 1]
  local old = redis.call('GET', KEYS[k])
  if not old or struct.unpack('<i8', new) > struct.unpack('<i8', old) then
    redis.call('SET', KEYS[k], new, 'PX', ttl_ms)
    written = written + 1
  end
end
return written
"""
