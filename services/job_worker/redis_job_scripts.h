#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_REDIS_JOB_SCRIPTS_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_REDIS_JOB_SCRIPTS_H_

// Lua run inside Redis by RedisJobStore. Every key starts with the
// deployment's tag "{prefix}" (ARGV[1]), so one Cluster slot holds them all.
//   P:jobs:rec:<id>        hash r <Job bytes> s <status> q <queue> c <corr> u <updated_us>
//   P:jobs:recent          zset id by updated_us (every kept record)
//   P:jobs:q:<queue>       zset id by updated_us
//   P:jobs:s:<status>      zset id by updated_us
//   P:jobs:co:<corr>       zset id by updated_us (expires after the retention)
//   P:jobs:count           hash "<queue>|<status>" -> records kept
//   P:jobs:retried         hash queue -> retries scheduled, ever
//   P:jobs:counter:<name>  integer (order numbers)
//   P:jobs:paused          set of paused queues
//   P:jobs:slots:<queue>   zset holder by lease end (ms): global concurrency
//   P:jobs:load            hash worker -> "queue,waiting,active,processed,ms;..."
//   P:jobs:load:until      zset worker by the end of its report (ms)
// Times travel as decimal strings computed by the caller (Lua would print
// large numbers in exponent form).

namespace switchboard::jobs::redis_scripts {

// ARGV: prefix updated_us cutoff_us retention_ms, then per job: id queue
// status corr record retry(0|1). Replaces each record and its index entries,
// then drops records last updated before cutoff_us: up to 100 plus twice the
// jobs written, so that retention keeps up with any batch size.
inline constexpr char kPut[] = R"lua(
local p, now = ARGV[1], ARGV[2]
local counts = p .. ':jobs:count'
-- Index writes go through kLuaBatch: one command per index key per call.
local function unindex(jid, s0, q0, c0)
  add_later(counts, q0 .. '|' .. s0, -1)
  later('ZREM', p .. ':jobs:s:' .. s0, jid)
  later('ZREM', p .. ':jobs:q:' .. q0, jid)
  if c0 ~= '' then later('ZREM', p .. ':jobs:co:' .. c0, jid) end
end
local recent = p .. ':jobs:recent'
for i = 5, #ARGV, 6 do
  local id, q, st, co = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = p .. ':jobs:rec:' .. id
  local old = redis.call('HMGET', key, 's', 'q', 'c')
  if old[1] then unindex(id, old[1], old[2], old[3]) end
  redis.call('HSET', key, 'r', ARGV[i + 4], 's', st, 'q', q, 'c', co, 'u', now)
  add_later(counts, q .. '|' .. st, 1)
  later('ZADD', recent, now, id)
  later('ZADD', p .. ':jobs:q:' .. q, now, id)
  later('ZADD', p .. ':jobs:s:' .. st, now, id)
  if co ~= '' then
    later('ZADD', p .. ':jobs:co:' .. co, now, id)
    expire_later(p .. ':jobs:co:' .. co, ARGV[4])
  end
  if ARGV[i + 5] == '1' then add_later(p .. ':jobs:retried', q, 1) end
end
-- (the retention below reads `recent`)
flush()
local drop = 100 + 2 * math.floor((#ARGV - 4) / 6)
for _, jid in ipairs(redis.call('ZRANGEBYSCORE', recent, '-inf', '(' .. ARGV[3], 'LIMIT', 0, drop)) do
  local k = p .. ':jobs:rec:' .. jid
  local o = redis.call('HMGET', k, 's', 'q', 'c')
  if o[1] then unindex(jid, o[1], o[2], o[3]) end
  redis.call('DEL', k)
  later('ZREM', recent, jid)
end
flush()
return 1
)lua";

// ARGV: prefix queue status corr limit. The newest records matching every
// given filter, walking the most selective index newest first and looking
// at no more than 5 000 candidates (a few ms of Redis). Returns their Job
// bytes.
inline constexpr char kList[] = R"lua(
local p, q, st, co, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local index = p .. ':jobs:recent'
if co ~= '' then
  index = p .. ':jobs:co:' .. co
elseif st ~= '0' and q ~= '' then
  local si, qi = p .. ':jobs:s:' .. st, p .. ':jobs:q:' .. q
  index = redis.call('ZCARD', si) <= redis.call('ZCARD', qi) and si or qi
elseif st ~= '0' then
  index = p .. ':jobs:s:' .. st
elseif q ~= '' then
  index = p .. ':jobs:q:' .. q
end
local out, start, budget = {}, 0, 5000
while #out < limit and budget > 0 do
  local ids = redis.call('ZREVRANGE', index, start, start + 199)
  if #ids == 0 then break end
  start = start + #ids
  budget = budget - #ids
  for _, jid in ipairs(ids) do
    local f = redis.call('HMGET', p .. ':jobs:rec:' .. jid, 'r', 's', 'q', 'c')
    if f[1] and (st == '0' or f[2] == st) and (q == '' or f[3] == q) and (co == '' or f[4] == co) then
      out[#out + 1] = f[1]
      if #out >= limit then break end
    end
  end
end
return out
)lua";

// ARGV: prefix queue holder limit now_ms lease_end_ms. 1 when the holder has
// a slot (taken now or renewed), else 0.
inline constexpr char kAcquireSlot[] = R"lua(
local k = ARGV[1] .. ':jobs:slots:' .. ARGV[2]
redis.call('ZREMRANGEBYSCORE', k, '-inf', ARGV[5])
if redis.call('ZSCORE', k, ARGV[3]) or redis.call('ZCARD', k) < tonumber(ARGV[4]) then
  redis.call('ZADD', k, ARGV[6], ARGV[3])
  return 1
end
return 0
)lua";

// ARGV: prefix queue now_ms lease_end_ms holder... Renews the slots the
// holders still have (an ended lease is not revived: it may be someone
// else's slot by now).
inline constexpr char kRenewSlots[] = R"lua(
local k = ARGV[1] .. ':jobs:slots:' .. ARGV[2]
redis.call('ZREMRANGEBYSCORE', k, '-inf', ARGV[3])
for i = 5, #ARGV do redis.call('ZADD', k, 'XX', ARGV[4], ARGV[i]) end
return 1
)lua";

// ARGV: prefix worker now_ms. Drops ended reports; returns the others'.
inline constexpr char kOtherLoads[] = R"lua(
local h, z = ARGV[1] .. ':jobs:load', ARGV[1] .. ':jobs:load:until'
for _, w in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', ARGV[3])) do
  redis.call('HDEL', h, w)
  redis.call('ZREM', z, w)
end
local out = {}
for _, w in ipairs(redis.call('ZRANGEBYSCORE', z, '(' .. ARGV[3], '+inf')) do
  if w ~= ARGV[2] then
    local v = redis.call('HGET', h, w)
    if v then out[#out + 1] = v end
  end
end
return out
)lua";

}  // namespace switchboard::jobs::redis_scripts

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_REDIS_JOB_SCRIPTS_H_
