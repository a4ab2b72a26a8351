#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_REDIS_WEBHOOK_SCRIPTS_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_REDIS_WEBHOOK_SCRIPTS_H_

// Lua run inside Redis by RedisWebhookStore and RedisDeliveryStore. Every key
// starts with the deployment's tag "{prefix}" (ARGV[1]), so one Cluster slot
// holds them all and each script is one atomic step.
//   P:wh:hook:<id>      hash r <Webhook bytes> ps <previous secret>
//                       pe <previous expiry us> v <version> t <last write token>
//   P:wh:hooks          set of webhook ids
//   P:wh:gen            integer, bumped by every registry write
//   P:wh:d:<id>         hash r <WebhookDelivery bytes> b <body> n <next attempt us>
//                       s <status> w <webhook> e <event> c <created us> o <lease owner>
//   P:wh:uniq           hash "<webhook>|<event>" -> delivery id
//   P:wh:due            zset pending id by due time (us); a claimed one by its lease end
//   P:wh:lw:<webhook>   zset id by lease end (us): the endpoint's deliveries under lease
//   P:wh:tokens         hash webhook -> "<tokens>:<last refill us>" (rate limits)
//   P:wh:all            zset id by created us
//   P:wh:byhook:<wh>    zset id by created us
//   P:wh:byevent:<ev>   set of ids
//   P:wh:count          hash status -> deliveries kept
//   P:wh:done           zset finished id by finish time (us): retention
// Times travel as decimal strings computed by the caller (Lua prints large
// numbers in exponent form unless told otherwise).

namespace switchboard::webhooks::redis_scripts {

// ARGV: prefix id expected_version record prev_secret prev_expires_us token.
// The new version, or -1 when the stored version is not the expected one. A
// write sent again after a lost reply (same token) answers its version.
inline constexpr char kPutHook[] = R"lua(
local w = ARGV[1] .. ':wh:'
local k = w .. 'hook:' .. ARGV[2]
local cur = redis.call('HMGET', k, 'v', 't')
local v = tonumber(cur[1] or '0')
if cur[2] == ARGV[7] then return v end
if v ~= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', k, 'r', ARGV[4], 'ps', ARGV[5], 'pe', ARGV[6], 'v', v + 1, 't', ARGV[7])
redis.call('SADD', w .. 'hooks', ARGV[2])
redis.call('INCR', w .. 'gen')
return v + 1
)lua";

// ARGV: prefix id. 1 when it was there.
inline constexpr char kDeleteHook[] = R"lua(
local w = ARGV[1] .. ':wh:'
local n = redis.call('DEL', w .. 'hook:' .. ARGV[2])
redis.call('SREM', w .. 'hooks', ARGV[2])
redis.call('INCR', w .. 'gen')
return n
)lua";

// ARGV: prefix. Flat: record prev_secret prev_expires_us version, per webhook.
inline constexpr char kListHooks[] = R"lua(
local w = ARGV[1] .. ':wh:'
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', w .. 'hooks')) do
  local f = redis.call('HMGET', w .. 'hook:' .. id, 'r', 'ps', 'pe', 'v')
  if f[1] then
    out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[3]; out[#out + 1] = f[4]
  end
end
return out
)lua";

// ARGV: prefix now_us, then per delivery: id webhook event status next_us
// record body. Records those whose (webhook, event) is new; returns how many.
inline constexpr char kCreate[] = R"lua(
local w, now = ARGV[1] .. ':wh:', ARGV[2]
local created = 0
for i = 3, #ARGV, 7 do
  local id, wid, eid, st, nx = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if redis.call('HSETNX', w .. 'uniq', wid .. '|' .. eid, id) == 1 then
    redis.call('HSET', w .. 'd:' .. id, 'r', ARGV[i + 5], 'b', ARGV[i + 6], 'n', nx, 's', st,
               'w', wid, 'e', eid, 'c', now, 'o', '')
    redis.call('ZADD', w .. 'all', now, id)
    redis.call('ZADD', w .. 'byhook:' .. wid, now, id)
    redis.call('SADD', w .. 'byevent:' .. eid, id)
    redis.call('HINCRBY', w .. 'count', st, 1)
    if st == '1' then redis.call('ZADD', w .. 'due', nx, id) end
    created = created + 1
  end
end
return created
)lua";

// ARGV: prefix owner now_us cutoff_us, then per delivery: id status next_us
// record. Writes a delivery when `owner` holds its lease (owner '': always,
// ending any lease), then drops up to 50 deliveries finished before
// cutoff_us. Returns how many were written.
inline constexpr char kWrite[] = R"lua(
local w, owner, now, cutoff = ARGV[1] .. ':wh:', ARGV[2], ARGV[3], ARGV[4]
local written = 0
for i = 5, #ARGV, 4 do
  local id, st, nx = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local k = w .. 'd:' .. id
  local f = redis.call('HMGET', k, 's', 'w', 'o')
  if f[1] and (owner == '' or f[3] == owner) then
    if f[1] ~= st then
      redis.call('HINCRBY', w .. 'count', f[1], -1)
      redis.call('HINCRBY', w .. 'count', st, 1)
    end
    redis.call('HSET', k, 'r', ARGV[i + 3], 's', st, 'n', nx, 'o', '')
    redis.call('ZREM', w .. 'lw:' .. f[2], id)
    if st == '1' then
      redis.call('ZADD', w .. 'due', nx, id)
      redis.call('ZREM', w .. 'done', id)
    else
      redis.call('ZREM', w .. 'due', id)
      redis.call('ZADD', w .. 'done', now, id)
    end
    written = written + 1
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', w .. 'done', '-inf', '(' .. cutoff, 'LIMIT', 0, 50)) do
  local k = w .. 'd:' .. id
  local f = redis.call('HMGET', k, 's', 'w', 'e')
  if f[1] then
    redis.call('HINCRBY', w .. 'count', f[1], -1)
    redis.call('HDEL', w .. 'uniq', f[2] .. '|' .. f[3])
    redis.call('ZREM', w .. 'all', id)
    redis.call('ZREM', w .. 'byhook:' .. f[2], id)
    redis.call('SREM', w .. 'byevent:' .. f[3], id)
    redis.call('DEL', k)
  end
  redis.call('ZREM', w .. 'done', id)
end
return written
)lua";

// ARGV: prefix owner now_us lease_end_us limit max_per_webhook nskip skip...
// nrates (webhook per_second burst)... Claims due deliveries earliest first
// (looking at 2 000 at most): skips the endpoints in skip, those with
// max_per_webhook under lease, and those whose token bucket is empty.
// Returns {{record body next_us ...}, {throttled_webhook next_token_us ...}}.
inline constexpr char kClaim[] = R"lua(
local w, owner, now, untl = ARGV[1] .. ':wh:', ARGV[2], tonumber(ARGV[3]), ARGV[4]
local limit, maxw = tonumber(ARGV[5]), tonumber(ARGV[6])
local skip, rates, i = {}, {}, 8
for _ = 1, tonumber(ARGV[7]) do skip[ARGV[i]] = true; i = i + 1 end
local nr = tonumber(ARGV[i]); i = i + 1
for _ = 1, nr do rates[ARGV[i]] = {tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])}; i = i + 3 end
local held = {}
local function held_by(wid)
  if held[wid] == nil then
    local lk = w .. 'lw:' .. wid
    redis.call('ZREMRANGEBYSCORE', lk, '-inf', ARGV[3])
    held[wid] = redis.call('ZCARD', lk)
  end
  return held[wid]
end
local function take_token(wid, r)
  local tokens, last = r[2], now
  local tk = redis.call('HGET', w .. 'tokens', wid)
  if tk then
    local sep = string.find(tk, ':', 1, true)
    tokens, last = tonumber(string.sub(tk, 1, sep - 1)), tonumber(string.sub(tk, sep + 1))
    if now > last then
      tokens = math.min(r[2], tokens + (now - last) * r[1] / 1e6)
      last = now
    end
  end
  local ok = tokens >= 1
  if ok then tokens = tokens - 1 end
  redis.call('HSET', w .. 'tokens', wid, string.format('%.6f:%.0f', tokens, last))
  return ok, last + (1 - tokens) / r[1] * 1e6
end
local out, throttled = {}, {}
local start, budget, claimed = 0, 2000, 0
while claimed < limit and budget > 0 do
  local ids = redis.call('ZRANGEBYSCORE', w .. 'due', '-inf', ARGV[3], 'LIMIT', start, 200)
  if #ids == 0 then break end
  budget = budget - #ids
  local moved = 0
  for _, id in ipairs(ids) do
    if claimed >= limit then break end
    local k = w .. 'd:' .. id
    local wid = redis.call('HGET', k, 'w')
    if not wid then
      redis.call('ZREM', w .. 'due', id)
      moved = moved + 1
    elseif not skip[wid] then
      if held_by(wid) >= maxw then
        skip[wid] = true
      else
        local ok, next_us = true, 0
        if rates[wid] then ok, next_us = take_token(wid, rates[wid]) end
        if not ok then
          skip[wid] = true
          throttled[#throttled + 1] = wid
          throttled[#throttled + 1] = string.format('%.0f', next_us)
        else
          redis.call('ZADD', w .. 'due', untl, id)
          redis.call('ZADD', w .. 'lw:' .. wid, untl, id)
          redis.call('HSET', k, 'o', owner)
          held[wid] = held[wid] + 1
          local f = redis.call('HMGET', k, 'r', 'b', 'n')
          out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[3]
          claimed = claimed + 1
          moved = moved + 1
        end
      end
    end
  end
  start = start + #ids - moved
end
return {out, throttled}
)lua";

// ARGV: prefix owner lease_end_us id... Extends the leases owner holds.
inline constexpr char kRenew[] = R"lua(
local w, owner = ARGV[1] .. ':wh:', ARGV[2]
for i = 4, #ARGV do
  local f = redis.call('HMGET', w .. 'd:' .. ARGV[i], 'o', 'w', 's')
  if f[1] == owner and f[3] == '1' then
    redis.call('ZADD', w .. 'due', 'XX', ARGV[3], ARGV[i])
    redis.call('ZADD', w .. 'lw:' .. f[2], ARGV[3], ARGV[i])
  end
end
return 1
)lua";

// ARGV: prefix owner id... Gives back leases owner holds: due at once.
inline constexpr char kRelease[] = R"lua(
local w, owner = ARGV[1] .. ':wh:', ARGV[2]
for i = 3, #ARGV do
  local k = w .. 'd:' .. ARGV[i]
  local f = redis.call('HMGET', k, 'o', 'w', 's', 'n')
  if f[1] == owner and f[3] == '1' then
    redis.call('HSET', k, 'o', '')
    redis.call('ZADD', w .. 'due', 'XX', f[4], ARGV[i])
    redis.call('ZREM', w .. 'lw:' .. f[2], ARGV[i])
  end
end
return 1
)lua";

// ARGV: prefix skip... The due time of the earliest pending delivery not of
// a skipped endpoint (looking at 1 000 at most), or nil.
inline constexpr char kNextDue[] = R"lua(
local w = ARGV[1] .. ':wh:'
local skip = {}
for i = 2, #ARGV do skip[ARGV[i]] = true end
local start = 0
while start < 1000 do
  local e = redis.call('ZRANGE', w .. 'due', start, start + 99, 'WITHSCORES')
  if #e == 0 then return false end
  for j = 1, #e, 2 do
    local wid = redis.call('HGET', w .. 'd:' .. e[j], 'w')
    if wid and not skip[wid] then return e[j + 1] end
  end
  start = start + 100
end
return false
)lua";

// ARGV: prefix webhook status event limit. The newest deliveries matching
// every given filter (looking at 5 000 at most). Flat: record body next_us.
inline constexpr char kList[] = R"lua(
local w, wid, st, eid, limit = ARGV[1] .. ':wh:', ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local out, n = {}, 0
local function consider(id)
  local f = redis.call('HMGET', w .. 'd:' .. id, 'r', 'b', 'n', 's', 'w')
  if f[1] and (st == '0' or f[4] == st) and (wid == '' or f[5] == wid) then
    out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[3]
    n = n + 1
  end
end
if eid ~= '' then
  local ids = redis.call('SMEMBERS', w .. 'byevent:' .. eid)
  local created = {}
  for _, id in ipairs(ids) do
    created[id] = tonumber(redis.call('HGET', w .. 'd:' .. id, 'c') or '0')
  end
  table.sort(ids, function(a, b)
    if created[a] ~= created[b] then return created[a] > created[b] end
    return a > b
  end)
  for _, id in ipairs(ids) do
    if n >= limit then break end
    consider(id)
  end
  return out
end
local index = wid ~= '' and (w .. 'byhook:' .. wid) or (w .. 'all')
local start, budget = 0, 5000
while n < limit and budget > 0 do
  local ids = redis.call('ZREVRANGE', index, start, start + 199)
  if #ids == 0 then break end
  start = start + #ids
  budget = budget - #ids
  for _, id in ipairs(ids) do
    if n >= limit then break end
    consider(id)
  end
end
return out
)lua";

}  // namespace switchboard::webhooks::redis_scripts

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_REDIS_WEBHOOK_SCRIPTS_H_
