#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_REDIS_SCRIPTS_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_REDIS_SCRIPTS_H_

// Lua run inside Redis by RedisEventStore. Every key is built from the
// deployment's tag "{prefix}" (ARGV[1]), so they share one Cluster slot and a
// script may touch any of them. Keys:
//   P:format            layout version of these keys (kRedisFormat)
//   P:seq               last sequence ever assigned (never decreases)
//   P:log               stream; entry id "<seq>-0", two fields: ty <type> and
//                       e "<ingest_us>,<time_us>,<#corr>,<#subject>;"<corr>
//                       <subject><payload> (one value, not six: every field
//                       costs an object in XADD and a Lua string in reads)
//   P:types             set of types present
//   P:ix:tb:<type>      zset of the blocks of 64 sequences (seq // 64) holding
//                       that type: one member per block, not per event (a
//                       per-event index cost 40 % of Redis's CPU per publish)
//   P:ix:co:<id>        zset seq by correlation id (expires after retention)
//   P:ix:su:<subject>   zset seq by subject (expires after retention)
//   P:groups            set of group names;  P:g:<name>  hash types cursor maxd
//   P:g:<name>:pending  hash seq -> attempts (:due, :owner, :why: see
//                       redis_group_scripts.h)
//   P:g:<name>:dead     zset seq;  P:g:<name>:dl:<seq>  hash a d i t p r
//                       (attempts, dead-lettered, ingested, type, payload,
//                       last error)
//   P:dw:<window ms>:<n> hash <source,id> -> "<seq>,<ms>": the client ids of
//                       events appended while Redis's clock (ms) was in
//                       [n * window, (n + 1) * window); expires a window
//                       after its last write
//   P:commit:<token>    the result of a commit already applied
// Sequences and times travel as decimal strings; Lua numbers hold them
// exactly below 2^53.

namespace switchboard::broker::redis_scripts {

// Splits an entry's `e` value: ingest_us, time_us, corr, subject, payload.
#define SWITCHBOARD_LUA_UNPACK_E                                                        \
  "local function unpack_e(e)\n"                                                        \
  "  local i, t, cl, sl, pos = string.match(e, '^(%d+),(%-?%d+),(%d+),(%d+);()')\n"     \
  "  if not pos then return '0', '0', '', '', '' end\n"                                 \
  "  cl, sl = tonumber(cl), tonumber(sl)\n"                                             \
  "  return i, t, string.sub(e, pos, pos + cl - 1),\n"                                  \
  "         string.sub(e, pos + cl, pos + cl + sl - 1), string.sub(e, pos + cl + sl)\n" \
  "end\n"

// Appends events and applies group ops atomically, skipping events whose
// dedupe key was appended within the window (by any broker). A commit
// retried with the same token (after a lost connection) is answered from the
// first run. KEYS[1] = P:seq. ARGV: prefix token token_ttl_ms now_us
// index_ttl_ms dedupe_ms seq_floor n_events {type corr subject dedupe_key
// e}*n n_ops {kind group args...}*, `e` the entry's packed value (above). Returns {first,
// dup_1..dup_n}: dup_k is 0 for an appended event, else the sequence it duplicates.
inline constexpr char kCommit[] = R"lua(
local p = ARGV[1]
local tok = p .. ':commit:' .. ARGV[2]
local n = tonumber(ARGV[8])
local done = redis.call('GET', tok)
if done then
  -- a write, so a WAIT after this retry covers the first run too
  redis.call('PEXPIRE', tok, ARGV[3])
  -- "<first>[,<k>=<dup>...]": only the duplicates are listed
  local r = {tonumber(string.match(done, '^(%d+)'))}
  for k = 2, n + 1 do r[k] = 0 end
  for k, d in string.gmatch(done, ',(%d+)=(%d+)') do r[tonumber(k)] = tonumber(d) end
  return r
end
local now, ttl, dedupe_ms = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local base = 9
local result = {0}
local first_in_batch, count = {}, 0
-- Client ids of the window live in hashes, one per window-long bucket of
-- Redis's clock, each field "<seq>,<ms>": a commit reads its ids from the
-- two buckets that can hold the window (and the next one, for a clock that
-- stepped back) with one HMGET each, and writes the new ones with one HSET
-- (a key per id, with its own expiry, cost a GET and a SET each: a fifth of
-- Redis's CPU per published event).
local seen, want, dd_key, dd_old, now_ms = {}, {}, nil, nil, 0
if dedupe_ms > 0 then
  for k = 1, n do
    local dkey = ARGV[base + (k - 1) * 5 + 3]
    if dkey ~= '' and not seen[dkey] then
      seen[dkey] = 0
      want[#want + 1] = dkey
    end
  end
end
if #want > 0 then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local b = math.floor(now_ms / dedupe_ms)
  local prefix = p .. ':dw:' .. ARGV[6] .. ':'
  dd_key = prefix .. string.format('%d', b)
  dd_old = prefix .. string.format('%d', b - 2)
  for _, key in ipairs({prefix .. string.format('%d', b - 1), dd_key,
                        prefix .. string.format('%d', b + 1)}) do
    for j = 1, #want, 1000 do
      local last = math.min(j + 999, #want)
      local vals = redis.call('HMGET', key, unpack(want, j, last))
      for m = 1, last - j + 1 do
        local v = vals[m]
        if v then
          local sq, at = string.match(v, '^(%d+),(%d+)$')
          if sq and tonumber(at) > now_ms - dedupe_ms then seen[want[j + m - 1]] = tonumber(sq) end
        end
      end
    end
  end
end
for k = 1, n do
  local dkey = ARGV[base + (k - 1) * 5 + 3]
  local dup = 0
  if dkey ~= '' and dedupe_ms > 0 then
    if first_in_batch[dkey] then
      dup = -first_in_batch[dkey]
    elseif seen[dkey] ~= 0 then
      dup = seen[dkey]
    else
      first_in_batch[dkey] = k
    end
  end
  result[k + 1] = dup
  if dup == 0 then count = count + 1 end
end
if count > 0 then
  -- Never below a sequence this broker has seen: after a failover lost the
  -- newest entries, their sequences are not handed out again.
  local floor = tonumber(ARGV[7])
  if floor > tonumber(redis.call('GET', KEYS[1]) or '0') then redis.call('SET', KEYS[1], ARGV[7]) end
  local seq = redis.call('INCRBY', KEYS[1], count) - count
  result[1] = seq + 1
  local log = p .. ':log'
  local seen_at = string.format(',%d', now_ms)
  -- Index entries and ids go through kLuaBatch: one command per key.
  local seq_of, last_block = {}, {}
  for k = 1, n do
    local i = base + (k - 1) * 5
    if result[k + 1] == 0 then
      seq = seq + 1
      seq_of[k] = seq
      local ty, co, su, dkey = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
      -- Formatted once with %d: Lua prints a number with %.14g and redis.call
      -- with %.17g, both through printf_fp, a tenth of Redis's CPU per event.
      local ss = string.format('%d', seq)
      redis.call('XADD', log, ss .. '-0', 'ty', ty, 'e', ARGV[i + 4])
      local b = math.floor(seq / 64)
      if last_block[ty] ~= b then
        if not last_block[ty] then later('SADD', p .. ':types', ty) end
        last_block[ty] = b
        later('ZADD', p .. ':ix:tb:' .. ty, b, b)
      end
      if co ~= '' then
        later('ZADD', p .. ':ix:co:' .. co, ss, ss)
        expire_later(p .. ':ix:co:' .. co, ttl)
      end
      if su ~= '' then
        later('ZADD', p .. ':ix:su:' .. su, ss, ss)
        expire_later(p .. ':ix:su:' .. su, ttl)
      end
      if dkey ~= '' and dd_key then later('HSET', dd_key, dkey, ss .. seen_at) end
    elseif result[k + 1] < 0 then
      result[k + 1] = seq_of[-result[k + 1]]
    end
  end
  -- An id written now must outlive the window from now. The bucket before
  -- the last is past it: freed in the background by UNLINK, not all at once
  -- by its expiry (a million fields would stall Redis).
  if dd_key then
    expire_later(dd_key, dedupe_ms + 1000)
    redis.call('UNLINK', dd_old)
  end
  flush()
end
local i = base + n * 5
local nops = tonumber(ARGV[i])
i = i + 1
for k = 1, nops do
  local kind, g = ARGV[i], ARGV[i + 1]
  i = i + 2
  local gk = p .. ':g:' .. g
  if kind == 'U' then
    redis.call('SADD', p .. ':groups', g)
    if redis.call('EXISTS', gk) == 0 then redis.call('HSET', gk, 'cursor', ARGV[i + 1]) end
    redis.call('HSET', gk, 'types', ARGV[i], 'maxd', ARGV[i + 2])
    i = i + 3
  elseif kind == 'C' then
    local cur = redis.call('HGET', gk, 'cursor')
    if cur and tonumber(ARGV[i]) > tonumber(cur) then redis.call('HSET', gk, 'cursor', ARGV[i]) end
    i = i + 1
  elseif kind == 'P' then
    redis.call('HSET', gk .. ':pending', ARGV[i], ARGV[i + 1])
    i = i + 2
  elseif kind == 'R' then
    redis.call('HDEL', gk .. ':pending', ARGV[i])
    i = i + 1
  elseif kind == 'D' then
    local s = ARGV[i]
    redis.call('HDEL', gk .. ':pending', s)
    redis.call('ZADD', gk .. ':dead', s, s)
    redis.call('HSET', gk .. ':dl:' .. s, 'a', ARGV[i + 1], 'd', now, 'i', ARGV[i + 2],
               't', ARGV[i + 3], 'p', ARGV[i + 4], 'r', ARGV[i + 5])
    i = i + 6
  elseif kind == 'X' then
    redis.call('ZREM', gk .. ':dead', ARGV[i])
    redis.call('DEL', gk .. ':dl:' .. ARGV[i])
    i = i + 1
  else
    return redis.error_reply('ERR unknown group op ' .. kind)
  end
end
-- Not cjson: it prints every number with %.14g, and a result is mostly zeros.
local kept = {string.format('%d', result[1])}
for k = 2, n + 1 do
  if result[k] ~= 0 then kept[#kept + 1] = string.format('%d=%d', k, result[k]) end
end
redis.call('SET', tok, table.concat(kept, ','), 'PX', ARGV[3])
return result
)lua";

// Ingest time of the entry at or after seq `s` (nil past the end).
#define SWITCHBOARD_LUA_INGEST_AT                                                                \
  "local function ingest_at(log, s)\n"                                                           \
  "  local e = redis.call('XRANGE', log, s .. '-0', '+', 'COUNT', 1)[1]\n"                       \
  "  if not e then return nil end\n"                                                             \
  "  local f = e[2]\n"                                                                           \
  "  for k = 1, #f, 2 do if f[k] == 'e' then return tonumber(string.match(f[k + 1], '^(%d+)')) " \
  "end end\n"                                                                                    \
  "  return 0\n"                                                                                 \
  "end\n"

// The first sequence in [lo, hi) ingested at or after target (hi if none):
// ingest time grows with the sequence, so bisect.
#define SWITCHBOARD_LUA_BISECT                                           \
  "local function first_at(log, lo, hi, target)\n"                       \
  "  while lo < hi do\n"                                                 \
  "    local mid = math.floor((lo + hi) / 2)\n"                          \
  "    local t = ingest_at(log, mid)\n"                                  \
  "    if t == nil or t >= target then hi = mid else lo = mid + 1 end\n" \
  "  end\n"                                                              \
  "  return lo\n"                                                        \
  "end\n"

// KEYS[1] = P:log. ARGV: prefix target_us. Returns the first sequence whose
// ingest time is >= target, or last + 1.
inline constexpr char kFirstAt[] = SWITCHBOARD_LUA_INGEST_AT SWITCHBOARD_LUA_BISECT R"lua(
local log = KEYS[1]
local last = tonumber(redis.call('GET', ARGV[1] .. ':seq') or '0')
local head = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
if not head then return last + 1 end
local first = tonumber(string.match(head[1], '^(%d+)'))
return first_at(log, first, last + 1, tonumber(ARGV[2]))
)lua";

// KEYS[1] = P:log. ARGV: prefix cutoff_us max_count max_delete. Deletes the
// oldest events beyond max_count or ingested before cutoff, at most
// max_delete; trims the type indexes. Returns how many were deleted.
inline constexpr char kRetention[] = SWITCHBOARD_LUA_INGEST_AT SWITCHBOARD_LUA_BISECT R"lua(
local p, log = ARGV[1], KEYS[1]
local len = redis.call('XLEN', log)
if len == 0 then return 0 end
local head = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
local first = tonumber(string.match(head[1], '^(%d+)'))
local max_count, max_delete = tonumber(ARGV[3]), tonumber(ARGV[4])
local below = first
if len > max_count then below = first + math.min(len - max_count, max_delete) end
local aged = first_at(log, first, first + math.min(len, max_delete), tonumber(ARGV[2]))
if aged > below then below = aged end
if below <= first then return 0 end
local deleted = redis.call('XTRIM', log, 'MINID', below .. '-0')
for _, ty in ipairs(redis.call('SMEMBERS', p .. ':types')) do
  local key = p .. ':ix:tb:' .. ty
  -- the block holding `below` may still hold younger events of the type
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. math.floor(below / 64))
  if redis.call('EXISTS', key) == 0 then redis.call('SREM', p .. ':types', ty) end
end
return deleted
)lua";

// KEYS[1] = P:log. ARGV: prefix limit before since_us corr subject n_exact
// exact* n_prefix prefix*. Newest first, as a flat array seq ingest type
// payload .... Walks the most selective index (correlation id, subject, the
// matching types, else the log) and filters on the rest, looking at no
// more than `budget` candidates per call.
inline constexpr char kQuery[] = SWITCHBOARD_LUA_UNPACK_E R"lua(
local p, log = ARGV[1], KEYS[1]
local limit, before = tonumber(ARGV[2]), tonumber(ARGV[3])
local since = nil
if ARGV[4] ~= '' then since = tonumber(ARGV[4]) end
local corr, subj = ARGV[5], ARGV[6]
local i = 7
local exact, ne = {}, tonumber(ARGV[i])
i = i + 1
for k = 1, ne do exact[ARGV[i]] = true; i = i + 1 end
local prefixes, np = {}, tonumber(ARGV[i])
i = i + 1
for k = 1, np do prefixes[#prefixes + 1] = ARGV[i]; i = i + 1 end
local function type_ok(t)
  if ne == 0 and np == 0 then return true end
  if exact[t] then return true end
  for _, pf in ipairs(prefixes) do if string.sub(t, 1, #pf) == pf then return true end end
  return false
end
local function get(f, name)
  for k = 1, #f, 2 do if f[k] == name then return f[k + 1] end end
  return ''
end
local out = {}
local budget = 20000
-- true when the limit is reached
local function consider(e)
  local f = e[2]
  local ty = get(f, 'ty')
  if not type_ok(ty) then return false end
  local ingest, tm, co, su, pl = unpack_e(get(f, 'e'))
  if corr ~= '' and co ~= corr then return false end
  if subj ~= '' and su ~= subj then return false end
  if since and tonumber(tm) < since then return false end
  out[#out + 1] = string.match(e[1], '^(%d+)')
  out[#out + 1] = ingest
  out[#out + 1] = ty
  out[#out + 1] = pl
  return #out >= 4 * limit
end
local index = nil
if corr ~= '' then
  index = {p .. ':ix:co:' .. corr}
elseif subj ~= '' then
  index = {p .. ':ix:su:' .. subj}
elseif ne + np > 0 then
  -- Blocks of 64 sequences holding a matching type, newest first; each is
  -- read from the log and filtered. Only blocks at or above every full
  -- page's last are known complete, so pages continue from there.
  local keys = {}
  for _, ty in ipairs(redis.call('SMEMBERS', p .. ':types')) do
    if type_ok(ty) then keys[#keys + 1] = p .. ':ix:tb:' .. ty end
  end
  local upper = nil  -- sequences below it remain (exclusive)
  if before > 0 then upper = before end
  while budget > 0 and #keys > 0 do
    local set, bound = {}, nil
    for _, key in ipairs(keys) do
      local hi = '+inf'
      if upper then hi = math.floor((upper - 1) / 64) end
      local r = redis.call('ZREVRANGEBYSCORE', key, hi, '-inf', 'LIMIT', 0, 100)
      for _, m in ipairs(r) do set[tonumber(m)] = true end
      if #r == 100 then
        local last = tonumber(r[#r])
        if bound == nil or last > bound then bound = last end
      end
    end
    local list = {}
    for b in pairs(set) do
      if bound == nil or b >= bound then list[#list + 1] = b end
    end
    if #list == 0 then break end
    table.sort(list, function(a, b) return a > b end)
    for _, b in ipairs(list) do
      local hi = (b + 1) * 64
      if upper and upper < hi then hi = upper end
      local entries = redis.call('XREVRANGE', log, '(' .. hi .. '-0', (b * 64) .. '-0')
      for _, e in ipairs(entries) do
        budget = budget - 1
        if consider(e) then return out end
      end
      upper = b * 64
      if budget <= 0 then break end
    end
    if bound == nil then break end
  end
  return out
end
if index == nil then
  local upper = '+'
  if before > 0 then upper = '(' .. before .. '-0' end
  while budget > 0 do
    local batch = redis.call('XREVRANGE', log, upper, '-', 'COUNT', 500)
    if #batch == 0 then break end
    for _, e in ipairs(batch) do
      budget = budget - 1
      if consider(e) then return out end
    end
    upper = '(' .. batch[#batch][1]
  end
  return out
end
local upper = nil
if before > 0 then upper = before end
while budget > 0 do
  local cands, bound = {}, nil
  for _, key in ipairs(index) do
    local hi = '+inf'
    if upper then hi = '(' .. upper end
    local r = redis.call('ZREVRANGEBYSCORE', key, hi, '-inf', 'LIMIT', 0, 500)
    for _, m in ipairs(r) do cands[#cands + 1] = tonumber(m) end
    -- a full page may hide older members: only seqs above its last are safe
    if #r == 500 then
      local last = tonumber(r[#r])
      if bound == nil or last > bound then bound = last end
    end
  end
  if #cands == 0 then break end
  table.sort(cands, function(a, b) return a > b end)
  for _, s in ipairs(cands) do
    if bound and s < bound then break end
    budget = budget - 1
    local e = redis.call('XRANGE', log, s .. '-0', s .. '-0')[1]
    if e and consider(e) then return out end
  end
  if bound == nil then break end
  upper = bound
end
return out
)lua";

}  // namespace switchboard::broker::redis_scripts

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_REDIS_SCRIPTS_H_
