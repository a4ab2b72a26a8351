#ifndef SWITCHBOARD_LIBS_REDIS_LUA_BATCH_H_
#define SWITCHBOARD_LIBS_REDIS_LUA_BATCH_H_

namespace switchboard::redis {

// Lua that a store's scripts start with when they write many index entries.
// Inside a script a redis.call costs about as much as the work of the command
// it runs (argument conversion, lookup, the reply back to Lua), so the index
// writes of a batch of records are gathered per key and sent as one command
// per key and kind at flush():
//   later(cmd, key, a[, b])  queues "cmd key ... a [b]" (cmd may carry
//                            options: 'ZADD XX GT'); its reply is not seen
//   add_later(key, field, n) HINCRBY, summed per key and field
//   expire_later(key, ms)    PEXPIRE after the key's other writes
//   flush()                  sends everything queued
// Per key the queued commands keep their order (ZADD then ZREM of the same
// member leaves it out); across keys they may not, so a script calls flush()
// before it reads a key it may have queued writes for. A key's PEXPIRE comes
// after its other queued commands, and all HINCRBYs after those: a key that
// takes increments is not given an expiry or other commands here.
inline constexpr char kLuaBatch[] = R"lua(
local batch_segs, batch_keys, batch_incr, batch_incr_keys, batch_ttl = {}, {}, {}, {}, {}
-- The table kept for `key` in `by_key`, made (and `key` listed) on first use.
local function entry(by_key, keys, key)
  local t = by_key[key]
  if not t then
    t = {}
    by_key[key] = t
    keys[#keys + 1] = key
  end
  return t
end
local function batch_of(key) return entry(batch_segs, batch_keys, key) end
local function later(cmd, key, a, b)
  local segs = batch_of(key)
  local s = segs[#segs]
  if not s or s.cmd ~= cmd then
    s = {cmd = cmd}
    segs[#segs + 1] = s
  end
  s[#s + 1] = a
  if b ~= nil then s[#s + 1] = b end
end
local function add_later(key, field, n)
  local t = entry(batch_incr, batch_incr_keys, key)
  t[field] = (t[field] or 0) + n
end
local function expire_later(key, ms)
  batch_of(key)
  batch_ttl[key] = ms
end
local function flush()
  for _, key in ipairs(batch_keys) do
    for _, s in ipairs(batch_segs[key]) do
      local head = {}
      for word in string.gmatch(s.cmd, '%S+') do head[#head + 1] = word end
      local name = table.remove(head, 1)
      -- In slices (unpack has a limit of a few thousand values); 2000 keeps
      -- score/member and field/value pairs whole.
      for j = 1, #s, 2000 do
        if #head == 0 then
          redis.call(name, key, unpack(s, j, math.min(j + 1999, #s)))
        else
          local args = {unpack(head)}
          for m = j, math.min(j + 1999, #s) do args[#args + 1] = s[m] end
          redis.call(name, key, unpack(args))
        end
      end
    end
    if batch_ttl[key] then redis.call('PEXPIRE', key, batch_ttl[key]) end
  end
  for _, key in ipairs(batch_incr_keys) do
    for field, n in pairs(batch_incr[key]) do
      if n ~= 0 then redis.call('HINCRBY', key, field, n) end
    end
  end
  batch_segs, batch_keys, batch_incr, batch_incr_keys, batch_ttl = {}, {}, {}, {}, {}
end
)lua";

}  // namespace switchboard::redis

#endif  // SWITCHBOARD_LIBS_REDIS_LUA_BATCH_H_
