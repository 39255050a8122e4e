package ledger

// msgpackLua defines the scripts' MessagePack codec, the local mp: Redis's
// own cmsgpack when the server has it (real Redis: fast C code), else a
// pure-Lua codec for the subset the ledger writes, byte for byte what
// Redis's lua-cmsgpack writes, so that the Go decoder (record.go) reads
// either. The pure codec is for servers whose Lua has no cmsgpack, such as
// the embedded miniredis that `enrollq demo` and the tests fall back to
// when redis-server is not installed.
//
// Subset: nil, booleans, integer-valued numbers (exact below 2^53), strings
// and array tables (an empty table is an empty array, as in cmsgpack).
// pack errors on a non-integer number and on a table that is not an array,
// rather than writing something cmsgpack would write differently; unpack
// returns the one value decoded and errors on any other MessagePack type.
const msgpackLua = `
local mp
do
  -- A server that guards its globals (miniredis does) raises an error on
  -- reading a missing one.
  local ok, native = pcall(function() return cmsgpack end)
  if ok then mp = native end
end
if not mp then
  mp = {}
  local char, byte, floor, concat = string.char, string.byte, math.floor, table.concat
  local P32 = 4294967296

  -- be: the n big-endian bytes of 0 <= v < 256^n (n <= 4).
  local function be(v, n)
    local b = {}
    for i = n, 1, -1 do
      b[i] = char(v % 256)
      v = floor(v / 256)
    end
    return concat(b)
  end

  local function int(n)
    if n >= 0 then
      if n < 128 then return char(n) end
      if n < 256 then return char(0xcc, n) end
      if n < 65536 then return char(0xcd) .. be(n, 2) end
      if n < P32 then return char(0xce) .. be(n, 4) end
      local hi = floor(n / P32)
      return char(0xcf) .. be(hi, 4) .. be(n - hi * P32, 4)
    end
    if n >= -32 then return char(n + 256) end
    if n >= -128 then return char(0xd0, n + 256) end
    if n >= -32768 then return char(0xd1) .. be(n + 65536, 2) end
    if n >= -2147483648 then return char(0xd2) .. be(n + P32, 4) end
    local hi = floor(n / P32)
    return char(0xd3) .. be(hi + P32, 4) .. be(n - hi * P32, 4)
  end

  local pack
  local function array(t)
    local n, max = 0, 0
    for k in pairs(t) do
      if type(k) ~= 'number' or k < 1 or k ~= floor(k) then
        error('mp.pack: a table that is not an array (key ' .. tostring(k) .. ')')
      end
      n = n + 1
      if k > max then max = k end
    end
    if n ~= max then error('mp.pack: an array with holes') end
    local out = {}
    if n < 16 then
      out[1] = char(0x90 + n)
    elseif n < 65536 then
      out[1] = char(0xdc) .. be(n, 2)
    else
      out[1] = char(0xdd) .. be(n, 4)
    end
    for i = 1, n do out[i + 1] = pack(t[i]) end
    return concat(out)
  end

  pack = function(v)
    local ty = type(v)
    if ty == 'nil' then return char(0xc0) end
    if ty == 'boolean' then
      if v then return char(0xc3) end
      return char(0xc2)
    end
    if ty == 'number' then
      if v ~= floor(v) or v >= 9223372036854775808 or v < -9223372036854775808 then
        error('mp.pack: not an integer: ' .. tostring(v))
      end
      return int(v)
    end
    if ty == 'string' then
      local n = #v
      if n < 32 then return char(0xa0 + n) .. v end
      if n < 256 then return char(0xd9, n) .. v end
      if n < 65536 then return char(0xda) .. be(n, 2) .. v end
      return char(0xdb) .. be(n, 4) .. v
    end
    if ty == 'table' then return array(v) end
    error('mp.pack: cannot pack a ' .. ty)
  end

  -- uint: the big-endian unsigned integer of n bytes (n <= 4) at s[i].
  local function uint(s, i, n)
    if i + n - 1 > #s then error('mp.unpack: truncated MessagePack') end
    local v = 0
    for j = i, i + n - 1 do v = v * 256 + byte(s, j) end
    return v
  end

  local value
  local function str(s, i, n)
    if i + n - 1 > #s then error('mp.unpack: truncated MessagePack') end
    return string.sub(s, i, i + n - 1), i + n
  end
  local function arr(s, i, n)
    local t = {}
    for j = 1, n do t[j], i = value(s, i) end
    return t, i
  end

  -- value decodes the value at s[i], returning it and the next position.
  value = function(s, i)
    local c = byte(s, i)
    if c == nil then error('mp.unpack: truncated MessagePack') end
    if c < 0x80 then return c, i + 1 end
    if c >= 0xe0 then return c - 256, i + 1 end
    if c >= 0xa0 and c < 0xc0 then return str(s, i + 1, c - 0xa0) end
    if c >= 0x90 and c < 0xa0 then return arr(s, i + 1, c - 0x90) end
    if c == 0xc0 then return nil, i + 1 end
    if c == 0xc2 then return false, i + 1 end
    if c == 0xc3 then return true, i + 1 end
    if c >= 0xcc and c <= 0xce then
      local n = 2 ^ (c - 0xcc)
      return uint(s, i + 1, n), i + 1 + n
    end
    if c == 0xcf or c == 0xd3 then
      local hi, lo = uint(s, i + 1, 4), uint(s, i + 5, 4)
      if c == 0xd3 and hi >= 2147483648 then hi = hi - P32 end
      return hi * P32 + lo, i + 9
    end
    if c >= 0xd0 and c <= 0xd2 then
      local n = 2 ^ (c - 0xd0)
      local v = uint(s, i + 1, n)
      if v >= 2 ^ (8 * n - 1) then v = v - 2 ^ (8 * n) end
      return v, i + 1 + n
    end
    if c >= 0xd9 and c <= 0xdb then
      local n = 2 ^ (c - 0xd9)
      return str(s, i + 1 + n, uint(s, i + 1, n))
    end
    if c == 0xdc or c == 0xdd then
      local n = 2 * (c - 0xdb)
      return arr(s, i + 1 + n, uint(s, i + 1, n))
    end
    error(string.format('mp.unpack: unsupported MessagePack byte 0x%02x', c))
  end

  mp.pack = pack
  mp.unpack = function(s)
    local v = value(s, 1)
    return v
  end
end
`
