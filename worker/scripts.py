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
# ARGV: window, stride, capacity, value_bytes, ttl_ms, then per key, in KEYS order: its event count,
# then (offset, ts_ms, value bytes) per event in offset order.
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

-- Applies the n_events events at ARGV[first], ARGV[first + 3], ... to one series; returns its reply.
local function apply_series(key, first, n_events)
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
    local off = tonumber(ARGV[first + 3 * e])
    local ts = tonumber(ARGV[first + 1 + 3 * e])
    local v = ARGV[first + 2 + 3 * e]
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
local first = 6
for k = 1, #KEYS do
  local n_events = tonumber(ARGV[first])
  replies[k] = apply_series(KEYS[k], first + 1, n_events)
  first = first + 1 + 3 * n_events
end
return replies
"""

# KEYS[1]: the series' detector key (`<prefix>:d:{<series_id>}`). ARGV: state bytes, ttl_ms.
# The state starts with last_end_ms (int64 LE), the end of the newest window folded into it; the
# write happens only if that is newer than the stored one, so a replay or a slower worker after a
# rebalance never rolls a series' score history back. Returns 1 if written, else 0.
SAVE_DETECTOR_STATE: Final = r"""
local old = redis.call('GET', KEYS[1])
if old and struct.unpack('<i8', ARGV[1]) <= struct.unpack('<i8', old) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
"""
