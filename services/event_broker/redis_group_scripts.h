#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_REDIS_GROUP_SCRIPTS_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_REDIS_GROUP_SCRIPTS_H_

// Lua for consumer groups shared by broker replicas (see redis_scripts.h for
// the log's keys). Per group P:g:<name>:
//   P:g:<name>          hash types cursor maxd redelivered
//   P:g:<name>:pending  hash seq -> deliveries so far
//   P:g:<name>:due      zset seq by the time (ms) it may be handed out again:
//                       the lease of whoever holds it, or a nack's delay
//   P:g:<name>:owner    hash seq -> replica holding it (absent: nobody)
//   P:g:<name>:why      hash seq -> why it came back before an ack (a nack's
//                       reason), until it is handed out again; absent when
//                       its lease ran out
//   P:g:<name>:dead, :dl:<seq>   dead letters, as for the embedded store
//                       (:dl:<seq> fields a d i t p r: r the last error,
//                       '' for an expired lease)
//   P:claim:<token>     a claim's deliveries, for a retry of it (60 s)
// <name> is the group's name with '%' and ':' percent-encoded, so no group's
// keys can be another's.
// Times are milliseconds of the brokers' clocks.

#include "services/event_broker/redis_scripts.h"  // SWITCHBOARD_LUA_UNPACK_E

namespace switchboard::broker::redis_scripts {

// Refuses sequences the group never handed out (after its cursor and not
// pending): returns -(their position among the sequences), changing nothing.
// Sequences start at ARGV[from], every `step` arguments.
#define SWITCHBOARD_LUA_CHECK_KNOWN(gk, from, step) \
  "local cursor = tonumber(redis.call('HGET', " gk  \
  ", 'cursor') or '0')\n"                           \
  "for i = " from ", #ARGV, " step                  \
  " do\n"                                           \
  "  if tonumber(ARGV[i]) > cursor and\n"           \
  "     redis.call('HEXISTS', " gk                  \
  " .. ':pending', ARGV[i]) == 0 then\n"            \
  "    return -((i - " from ") / " step             \
  " + 1)\n"                                         \
  "  end\n"                                         \
  "end\n"

// KEYS[1] = P:log. ARGV: prefix group owner now_ms lease_ms max max_scan
// types cursor maxd set_types token max_bytes. Creates the group if new (at
// `cursor`, with `types`); with set_types '1' a member's new filter replaces
// the stored one (else every replica claims with the stored filter). Then
// leases up to `max` deliveries (and about max_bytes of payload) to
// `owner`: first those due again (dead-lettering those out of deliveries),
// then new matching events after the cursor. A claim retried with the same
// token gets the same deliveries again.
// With more arguments, expect_cursor expect_types new_cursor seq*: the new
// events were chosen by the caller, who read the log after expect_cursor
// itself (a plain XRANGE: no payload passes through Lua). The group must
// exist with that cursor and filter (else {-1, cursor, types}, nothing
// changed: the caller may read again from there); the given
// sequences are leased (as many as fit) and the cursor moves to new_cursor,
// or to the last one leased when not all fit.
// Returns {dead, redelivered, more, types, cursor, given_leased,
// {seq attempt type e}*}, `e` the entry's packed value: the due ones (all
// of them when the claim is a retry of one already applied).
inline constexpr char kClaim[] = SWITCHBOARD_LUA_UNPACK_E R"lua(
local p, log = ARGV[1], KEYS[1]
local g, owner = ARGV[2], ARGV[3]
local now, lease, max, max_scan = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local max_bytes = tonumber(ARGV[13])
local gk = p .. ':g:' .. g
-- An entry's fields are ty <type> e <packed> (the commit script writes no
-- others), so they are taken by position.
local function emit(out, s, attempts, e)
  local f = e[2]
  out[#out + 1] = s
  out[#out + 1] = attempts
  out[#out + 1] = f[2]
  out[#out + 1] = f[4]
end
local given = #ARGV > 13
local tk = p .. ':claim:' .. ARGV[12]
local done = redis.call('GET', tk)
if done then
  -- the reply of this claim was lost: the same deliveries again
  local head, out = {}, {}
  for v in string.gmatch(done, '[^,]+') do head[#head + 1] = v end
  out[1], out[2], out[3] = tonumber(head[1]), tonumber(head[2]), tonumber(head[3])
  out[4] = redis.call('HGET', gk, 'types') or ''
  out[5] = redis.call('HGET', gk, 'cursor') or '0'
  out[6] = 0
  for i = 4, #head, 2 do
    local e = redis.call('XRANGE', log, head[i] .. '-0', head[i] .. '-0')[1]
    if e then emit(out, tonumber(head[i]), tonumber(head[i + 1]), e) end
  end
  return out
end
if given then
  local cur = redis.call('HMGET', gk, 'cursor', 'types')
  if cur[1] ~= ARGV[14] or cur[2] ~= ARGV[15] then return {-1, cur[1] or '', cur[2] or ''} end
elseif redis.call('EXISTS', gk) == 0 then
  redis.call('SADD', p .. ':groups', g)
  redis.call('HSET', gk, 'cursor', ARGV[9], 'redelivered', 0, 'types', ARGV[8])
elseif ARGV[11] == '1' then
  redis.call('HSET', gk, 'types', ARGV[8])
end
redis.call('HSET', gk, 'maxd', ARGV[10])
local types = redis.call('HGET', gk, 'types')
local maxd = tonumber(ARGV[10])
local all, exact, prefixes = types == '', {}, {}
for t in string.gmatch(types, '[^,]+') do
  if t == '*' then
    all = true
  elseif string.sub(t, -2) == '.*' then
    prefixes[#prefixes + 1] = string.sub(t, 1, -2)
  else
    exact[t] = true
  end
end
local function type_ok(ty)
  if all or exact[ty] then return true end
  for _, pf in ipairs(prefixes) do if string.sub(ty, 1, #pf) == pf then return true end end
  return false
end
local pend, due, own, why = gk .. ':pending', gk .. ':due', gk .. ':owner', gk .. ':why'
local out = {0, 0, 0, types, '', 0}
local record = {}
local n, bytes = 0, 0
-- The leases are written at the end, one command per key. Sequences,
-- attempts and times go as strings: a Lua number handed to redis.call is
-- printed with %.17g, which cost more than the rest of a claim.
local set_pend, set_due, set_own, k = {}, {}, {}, 0
local until_ms = string.format('%d', now + lease)
local function hand(s, attempts, e)
  k = k + 2
  set_pend[k - 1] = s
  set_pend[k] = attempts
  set_due[k - 1] = until_ms
  set_due[k] = s
  set_own[k - 1] = s
  set_own[k] = owner
  record[k - 1] = s
  record[k] = attempts
  n = n + 1
  if e then  -- (given events travel outside Lua)
    emit(out, s, attempts, e)
    bytes = bytes + #e[2][4]
  end
end
for _, s in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, max)) do
  if n >= max or bytes >= max_bytes then break end
  local attempts = tonumber(redis.call('HGET', pend, s) or '0')
  local e = redis.call('XRANGE', log, s .. '-0', s .. '-0')[1]
  -- what ended the attempt before: a requeue's reason, else its lease ran out
  local reason = redis.call('HGET', why, s)
  if reason then redis.call('HDEL', why, s) end
  if not e or attempts >= maxd then
    redis.call('HDEL', pend, s)
    redis.call('ZREM', due, s)
    redis.call('HDEL', own, s)
    if e then
      local f = e[2]
      local ingest, _, _, _, pl = unpack_e(f[4])
      redis.call('ZADD', gk .. ':dead', s, s)
      redis.call('HSET', gk .. ':dl:' .. s, 'a', attempts, 'd', ARGV[4] .. '000', 'i', ingest,
                 't', f[2], 'p', pl, 'r', reason or '')
      out[1] = out[1] + 1
    end
  else
    if attempts >= 1 then
      out[2] = out[2] + 1
      redis.call('HINCRBY', gk, 'redelivered', 1)
    end
    hand(s, tostring(attempts + 1), e)
  end
end
local cursor = redis.call('HGET', gk, 'cursor')
local scanned = 0
if given then
  local all = true
  for i = 17, #ARGV do
    if n >= max then
      all = false
      break
    end
    hand(ARGV[i], '1', nil)
    cursor = ARGV[i]
    out[6] = out[6] + 1
  end
  if all then cursor = ARGV[16] else out[3] = 1 end
  max_scan = 0  -- the caller scanned
end
while n < max and bytes < max_bytes and scanned < max_scan do
  local batch = redis.call('XRANGE', log, '(' .. cursor .. '-0', '+', 'COUNT', 256)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    cursor = string.match(e[1], '^(%d+)')
    scanned = scanned + 1
    if type_ok(e[2][2]) then
      hand(cursor, '1', e)
      if n >= max or bytes >= max_bytes then break end
    end
  end
  if #batch < 256 then break end
end
redis.call('HSET', gk, 'cursor', cursor)
out[5] = cursor
if n > 0 then
  redis.call('HSET', pend, unpack(set_pend))
  redis.call('ZADD', due, unpack(set_due))
  redis.call('HSET', own, unpack(set_own))
end
if n >= max or bytes >= max_bytes or (not given and scanned >= max_scan) then out[3] = 1 end
if #record > 0 or out[1] > 0 then
  redis.call('SET', tk, out[1] .. ',' .. out[2] .. ',' .. out[3] ..
             (#record > 0 and (',' .. table.concat(record, ',')) or ''), 'PX', 60000)
end
return out
)lua";

// ARGV: prefix group seq*. Removes the deliveries (an ack of any attempt:
// the event was handled); returns how many were pending, or for a sequence
// never delivered -its position, changing nothing.
inline constexpr char kAck[] =
    "local gk = ARGV[1] .. ':g:' .. ARGV[2]\n" SWITCHBOARD_LUA_CHECK_KNOWN("gk", "3", "1") R"lua(
local n = 0
-- in slices of 1000 (unpack has a limit of a few thousand values)
for i = 3, #ARGV, 1000 do
  local last = math.min(i + 999, #ARGV)
  local removed = redis.call('HDEL', gk .. ':pending', unpack(ARGV, i, last))
  if removed > 0 then
    redis.call('ZREM', gk .. ':due', unpack(ARGV, i, last))
    redis.call('HDEL', gk .. ':owner', unpack(ARGV, i, last))
    redis.call('HDEL', gk .. ':why', unpack(ARGV, i, last))
    n = n + removed
  end
end
return n
)lua";

// ARGV: prefix group at_ms mode reason {seq attempt}*. mode 'any': held
// deliveries at that attempt become due at at_ms for anyone (a nack);
// 'owner=<id>': only those that replica still holds at that attempt (a
// member gone). Each keeps `reason` until it is handed out again.
// Returns how many changed (or -position of a sequence never delivered).
inline constexpr char kRequeue[] =
    "local gk = ARGV[1] .. ':g:' .. ARGV[2]\n" SWITCHBOARD_LUA_CHECK_KNOWN("gk", "6", "2") R"lua(
local at, mode, reason = tonumber(ARGV[3]), ARGV[4], ARGV[5]
local owner = nil
if string.sub(mode, 1, 6) == 'owner=' then owner = string.sub(mode, 7) end
local n = 0
for i = 6, #ARGV - 1, 2 do
  local s, attempt = ARGV[i], ARGV[i + 1]
  local holder = redis.call('HGET', gk .. ':owner', s)
  if holder and (owner == nil or holder == owner) and
     redis.call('HGET', gk .. ':pending', s) == attempt then
    redis.call('HDEL', gk .. ':owner', s)
    redis.call('ZADD', gk .. ':due', at, s)
    redis.call('HSET', gk .. ':why', s, reason)
    n = n + 1
  end
end
return n
)lua";

// ARGV: prefix group at_ms seq*. Dead letters become pending again, due at
// at_ms; returns how many.
inline constexpr char kRevive[] = R"lua(
local gk = ARGV[1] .. ':g:' .. ARGV[2]
local at = tonumber(ARGV[3])
local n = 0
for i = 4, #ARGV do
  local s = ARGV[i]
  if redis.call('ZREM', gk .. ':dead', s) == 1 then
    redis.call('DEL', gk .. ':dl:' .. s)
    if redis.call('HEXISTS', gk .. ':pending', s) == 0 then
      redis.call('HSET', gk .. ':pending', s, 0)
      redis.call('ZADD', gk .. ':due', at, s)
      n = n + 1
    end
  end
end
return n
)lua";

// ARGV: prefix group until_ms {seq attempt}*. A new lease end for held
// deliveries still at that attempt; returns how many.
inline constexpr char kExtend[] =
    "local gk = ARGV[1] .. ':g:' .. ARGV[2]\n" SWITCHBOARD_LUA_CHECK_KNOWN("gk", "4", "2") R"lua(
local n = 0
for i = 4, #ARGV - 1, 2 do
  if redis.call('HEXISTS', gk .. ':owner', ARGV[i]) == 1 and
     redis.call('HGET', gk .. ':pending', ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', gk .. ':due', 'XX', ARGV[3], ARGV[i])
    n = n + 1
  end
end
return n
)lua";

// ARGV: prefix group owner now_ms seq*. Those `owner` still holds with a
// lease ending after now.
inline constexpr char kStillHeld[] = R"lua(
local gk = ARGV[1] .. ':g:' .. ARGV[2]
local now = tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV do
  if redis.call('HGET', gk .. ':owner', ARGV[i]) == ARGV[3] then
    local d = redis.call('ZSCORE', gk .. ':due', ARGV[i])
    if d and tonumber(d) > now then out[#out + 1] = ARGV[i] end
  end
end
return out
)lua";

}  // namespace switchboard::broker::redis_scripts

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_REDIS_GROUP_SCRIPTS_H_
