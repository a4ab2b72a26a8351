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
//                       t <claim token: bumped by every claim>
//   P:wh:uniq           hash "<webhook>|<event>" -> delivery id
//   P:wh:due            zset pending id by due time (us); a claimed one by its lease end
//   P:wh:due:<webhook>  the same, per endpoint
//   P:wh:dueq           zset webhook by the due time of its earliest pending delivery:
//                       a claim walks endpoints, so one endpoint's backlog costs it one
//                       step however long it is
//   P:wh:lw:<webhook>   zset id by lease end (us): the endpoint's deliveries under lease
//   P:wh:tokens         hash webhook -> "<tokens>:<last refill us>" (rate limits)
//   P:wh:lastclaim:<o>  "<request id>|id,id,..": owner o's last claim, answered again
//                       when the same request is sent again (a lost reply)
//   P:wh:all            zset id by created us
//   P:wh:byhook:<wh>    zset id by created us
//   P:wh:bys:<status>   zset id by created us
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

// What every outbox script starts with (after redis::kLuaBatch): the key
// prefix and the upkeep of the due sets (a pending delivery is in P:wh:due
// and P:wh:due:<webhook>, and the endpoint in P:wh:dueq at its earliest).
// set_due and clear_due are queued writes: resched reads due:<webhook>, so a
// script flushes before it.
inline constexpr char kOutboxPrelude[] = R"lua(
local w = ARGV[1] .. ':wh:'
local function resched(wid)
  local first = redis.call('ZRANGE', w .. 'due:' .. wid, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', w .. 'dueq', wid)
  else
    redis.call('ZADD', w .. 'dueq', first[2], wid)
  end
end
local function set_due(id, wid, at)
  later('ZADD', w .. 'due', at, id)
  later('ZADD', w .. 'due:' .. wid, at, id)
end
local function clear_due(id, wid)
  later('ZREM', w .. 'due', id)
  later('ZREM', w .. 'due:' .. wid, id)
end
)lua";

// ARGV: prefix now_us registry_generation ('': any), then per delivery: id
// webhook event status next_us record body. Records those whose (webhook,
// event) is new; returns how many, or -1 (writing nothing) when the webhook
// registry's generation (P:wh:gen) is not registry_generation.
inline constexpr char kCreate[] = R"lua(
local now = ARGV[2]
if ARGV[3] ~= '' and (redis.call('GET', w .. 'gen') or '0') ~= ARGV[3] then return -1 end
local created = 0
-- Each endpoint's place in dueq is set once, after all its deliveries.
local touched = {}
for i = 4, #ARGV, 7 do
  local id, wid, eid, st, nx = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if redis.call('HSETNX', w .. 'uniq', wid .. '|' .. eid, id) == 1 then
    redis.call('HSET', w .. 'd:' .. id, 'r', ARGV[i + 5], 'b', ARGV[i + 6], 'n', nx, 's', st,
               'w', wid, 'e', eid, 'c', now, 'o', '', 't', 0)
    later('ZADD', w .. 'all', now, id)
    later('ZADD', w .. 'byhook:' .. wid, now, id)
    later('ZADD', w .. 'bys:' .. st, now, id)
    later('SADD', w .. 'byevent:' .. eid, id)
    add_later(w .. 'count', st, 1)
    if st == '1' then
      set_due(id, wid, nx)
      touched[wid] = true
    end
    created = created + 1
  end
end
flush()
for wid in pairs(touched) do resched(wid) end
return created
)lua";

// ARGV: prefix owner now_us cutoff_us, then per delivery: id status next_us
// record token. Writes a delivery when `owner` holds it under that claim
// token (owner '': always, ending any lease: a redelivery), then drops
// deliveries finished before cutoff_us (50, or twice as many as this call
// finished). Returns how many were written.
inline constexpr char kWrite[] = R"lua(
local owner, now, cutoff = ARGV[2], ARGV[3], ARGV[4]
local written, finished = 0, 0
local touched = {}  -- endpoints rescheduled once, after the loop
for i = 5, #ARGV, 5 do
  local id, st, nx = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local k = w .. 'd:' .. id
  local f = redis.call('HMGET', k, 's', 'w', 'o', 't', 'c')
  if f[1] and (owner == '' or (f[3] == owner and f[4] == ARGV[i + 4])) then
    if f[1] ~= st then
      add_later(w .. 'count', f[1], -1)
      add_later(w .. 'count', st, 1)
      later('ZREM', w .. 'bys:' .. f[1], id)
      later('ZADD', w .. 'bys:' .. st, f[5], id)
    end
    redis.call('HSET', k, 'r', ARGV[i + 3], 's', st, 'n', nx, 'o', '')
    later('ZREM', w .. 'lw:' .. f[2], id)
    if st == '1' then
      set_due(id, f[2], nx)
      later('ZREM', w .. 'done', id)
    else
      clear_due(id, f[2])
      later('ZADD', w .. 'done', now, id)
      finished = finished + 1
    end
    touched[f[2]] = true
    written = written + 1
  end
end
-- (resched and the trim below read what was queued)
flush()
for wid in pairs(touched) do resched(wid) end
local trim = math.max(50, 2 * finished)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', w .. 'done', '-inf', '(' .. cutoff, 'LIMIT', 0, trim)) do
  local k = w .. 'd:' .. id
  local f = redis.call('HMGET', k, 's', 'w', 'e')
  if f[1] then
    add_later(w .. 'count', f[1], -1)
    later('HDEL', w .. 'uniq', f[2] .. '|' .. f[3])
    later('ZREM', w .. 'all', id)
    later('ZREM', w .. 'byhook:' .. f[2], id)
    later('ZREM', w .. 'bys:' .. f[1], id)
    later('SREM', w .. 'byevent:' .. f[3], id)
    redis.call('DEL', k)
  end
  later('ZREM', w .. 'done', id)
end
flush()
return written
)lua";

// ARGV: prefix owner now_us lease_end_us limit max_per_webhook request_id
// lease_ms nskip skip... nrates (webhook per_second burst)... Claims due
// deliveries for owner, walking endpoints by their earliest due delivery
// (1 000 endpoints at most): skips those in skip, reports those with
// max_per_webhook under lease over every owner as full, takes one token of
// an endpoint's bucket per delivery and reports it throttled when empty.
// Returns {{record body next_us token ...}, {throttled_webhook next_token_us
// ...}, {full_webhook ...}}. The same request_id sent again answers the
// same claims (those still held).
inline constexpr char kClaim[] = R"lua(
local owner, now, untl = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local limit, maxw, req = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local lk = w .. 'lastclaim:' .. owner
local last = redis.call('GET', lk)
if last and string.sub(last, 1, #req + 1) == req .. '|' then
  local out = {}
  for id in string.gmatch(string.sub(last, #req + 2), '[^,]+') do
    local f = redis.call('HMGET', w .. 'd:' .. id, 'r', 'b', 'n', 'o', 't')
    if f[1] and f[4] == owner then
      out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[3]; out[#out + 1] = f[5]
    end
  end
  return {out, {}, {}}
end
local skip, rates, i = {}, {}, 10
for _ = 1, tonumber(ARGV[9]) do skip[ARGV[i]] = true; i = i + 1 end
local nr = tonumber(ARGV[i]); i = i + 1
for _ = 1, nr do rates[ARGV[i]] = {tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])}; i = i + 3 end
local function take_token(wid, r)
  local tokens, lastt = r[2], now
  local tk = redis.call('HGET', w .. 'tokens', wid)
  if tk then
    local sep = string.find(tk, ':', 1, true)
    tokens, lastt = tonumber(string.sub(tk, 1, sep - 1)), tonumber(string.sub(tk, sep + 1))
    if now > lastt then
      tokens = math.min(r[2], tokens + (now - lastt) * r[1] / 1e6)
      lastt = now
    end
  end
  local ok = tokens >= 1
  if ok then tokens = tokens - 1 end
  redis.call('HSET', w .. 'tokens', wid, string.format('%.6f:%.0f', tokens, lastt))
  return ok, lastt + (1 - tokens) / r[1] * 1e6
end
local out, throttled, full, ids_taken = {}, {}, {}, {}
for _, wid in ipairs(redis.call('ZRANGEBYSCORE', w .. 'dueq', '-inf', ARGV[3], 'LIMIT', 0, 1000)) do
  if #ids_taken >= limit then break end
  if not skip[wid] then
    local lw = w .. 'lw:' .. wid
    redis.call('ZREMRANGEBYSCORE', lw, '-inf', ARGV[3])
    local room = math.min(maxw - redis.call('ZCARD', lw), limit - #ids_taken)
    if room <= 0 then
      full[#full + 1] = wid
    else
      for _, id in ipairs(redis.call('ZRANGEBYSCORE', w .. 'due:' .. wid, '-inf', ARGV[3], 'LIMIT', 0, room)) do
        local k = w .. 'd:' .. id
        local f = redis.call('HMGET', k, 'r', 'b', 'n', 't')
        if not f[1] then
          clear_due(id, wid)
        else
          local ok, next_us = true, 0
          if rates[wid] then ok, next_us = take_token(wid, rates[wid]) end
          if not ok then
            throttled[#throttled + 1] = wid
            throttled[#throttled + 1] = string.format('%.0f', next_us)
            break
          end
          set_due(id, wid, untl)
          later('ZADD', lw, untl, id)
          local token = tostring(tonumber(f[4] or '0') + 1)
          redis.call('HSET', k, 'o', owner, 't', token)
          out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[3]
          out[#out + 1] = token
          ids_taken[#ids_taken + 1] = id
        end
      end
      flush()
      resched(wid)
    end
  end
end
redis.call('SET', lk, req .. '|' .. table.concat(ids_taken, ','), 'PX', ARGV[8])
return {out, throttled, full}
)lua";

// ARGV: prefix owner lease_end_us id... Extends (never shortens) the leases
// owner holds.
inline constexpr char kRenew[] = R"lua(
local owner = ARGV[2]
local touched = {}
for i = 4, #ARGV do
  local f = redis.call('HMGET', w .. 'd:' .. ARGV[i], 'o', 'w', 's')
  if f[1] == owner and f[3] == '1' then
    later('ZADD XX GT', w .. 'due', ARGV[3], ARGV[i])
    later('ZADD XX GT', w .. 'due:' .. f[2], ARGV[3], ARGV[i])
    later('ZADD GT', w .. 'lw:' .. f[2], ARGV[3], ARGV[i])
    touched[f[2]] = true
  end
end
flush()
for wid in pairs(touched) do resched(wid) end
return 1
)lua";

// ARGV: prefix owner (id token)... Gives back claims owner holds under those
// tokens: due at once for everyone.
inline constexpr char kRelease[] = R"lua(
local owner = ARGV[2]
local touched = {}
for i = 3, #ARGV, 2 do
  local k = w .. 'd:' .. ARGV[i]
  local f = redis.call('HMGET', k, 'o', 'w', 's', 'n', 't')
  if f[1] == owner and f[3] == '1' and f[5] == ARGV[i + 1] then
    redis.call('HSET', k, 'o', '')
    set_due(ARGV[i], f[2], f[4])
    later('ZREM', w .. 'lw:' .. f[2], ARGV[i])
    touched[f[2]] = true
  end
end
flush()
for wid in pairs(touched) do resched(wid) end
return 1
)lua";

// ARGV: prefix skip... When the earliest pending delivery of an endpoint not
// skipped is due (or its lease ends), looking at 1 000 endpoints at most; nil
// when none.
inline constexpr char kNextDue[] = R"lua(
local skip = {}
for i = 2, #ARGV do skip[ARGV[i]] = true end
local e = redis.call('ZRANGE', w .. 'dueq', 0, 999, 'WITHSCORES')
for j = 1, #e, 2 do
  if not skip[e[j]] then return e[j + 1] end
end
return false
)lua";

// ARGV: prefix webhook status event limit. The newest deliveries matching
// every given filter, walking the most selective index (looking at 5 000 at
// most). Flat: record body next_us.
inline constexpr char kList[] = R"lua(
local wid, st, eid, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
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
local index = w .. 'all'
if st ~= '0' and wid ~= '' then
  local si, hi = w .. 'bys:' .. st, w .. 'byhook:' .. wid
  index = redis.call('ZCARD', si) <= redis.call('ZCARD', hi) and si or hi
elseif st ~= '0' then
  index = w .. 'bys:' .. st
elseif wid ~= '' then
  index = w .. 'byhook:' .. wid
end
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
