package ledger

import (
	"bytes"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redistest"
)

// msgpackSamples builds, in Lua, the values the codec test packs: every
// type the ledger writes and every boundary between encodings. Each entry
// is {name, value} (a nil value is packed by name).
const msgpackSamples = `
local function rep(n) return string.rep('x', n) end
local function seq(n) local t = {} for i = 1, n do t[i] = i end return t end
local S = {
  {'nil', nil}, {'true', true}, {'false', false},
  {'0', 0}, {'127', 127}, {'128', 128}, {'255', 255}, {'256', 256},
  {'65535', 65535}, {'65536', 65536}, {'2^32-1', 4294967295}, {'2^32', 4294967296},
  {'2^40', 1099511627776}, {'2^53', 9007199254740992}, {'ms', 1764583200123},
  {'-1', -1}, {'-32', -32}, {'-33', -33}, {'-128', -128}, {'-129', -129},
  {'-32768', -32768}, {'-32769', -32769}, {'-2^31', -2147483648},
  {'-2^31-1', -2147483649}, {'-2^40', -1099511627776}, {'-2^53', -9007199254740992},
  {'str0', rep(0)}, {'str31', rep(31)}, {'str32', rep(32)}, {'str255', rep(255)},
  {'str256', rep(256)}, {'str65535', rep(65535)}, {'str65536', rep(65536)},
  {'bytes', '\0\1\255\128 binary'},
  {'arr0', {}}, {'arr15', seq(15)}, {'arr16', seq(16)}, {'arr65535', seq(65535)},
  {'arr65536', seq(65536)},
  {'nested', {1, {}, {2, {'a', false, {true}}}, '', -5, 300}},
  {'record', {5, 3, 1764583200, 1767175200, 'abcdefgh', 's', 'run-1', 1, 'rid', 0, {1, 5, 2, 0}}},
}
`

// TestMsgpackPureMatchesCmsgpack: on a real Redis, the pure-Lua codec (the
// scripts' mp when the server's Lua has no cmsgpack, as miniredis's) writes
// the same bytes as Redis's cmsgpack for every sample, and each codec reads
// back what either wrote.
func TestMsgpackPureMatchesCmsgpack(t *testing.T) {
	t.Parallel()
	if k := redistest.Kind(t); k == redistest.KindMiniredis {
		t.Skip("needs a real Redis: miniredis's Lua has no cmsgpack to compare the pure-Lua codec with")
	}
	rdb := redistest.Client(t, redisDB)
	script := redis.NewScript(`
local native = cmsgpack
local pure = (function()
  local cmsgpack = nil
` + msgpackLua + `
  return mp
end)()
assert(pure ~= native, 'the pure codec was not loaded')
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= 'table' then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k, v in pairs(b) do if not same(v, a[k]) then return false end end
  return true
end
local function ok(c) if c then return 1 end return 0 end
` + msgpackSamples + `
local out = {}
for _, s in ipairs(S) do
  local v = s[2]
  local a, b = native.pack(v), pure.pack(v)
  out[#out + 1] = {s[1], a, b,
    ok(same(native.unpack(a), v)), ok(same(pure.unpack(b), v)),
    ok(same(pure.unpack(a), v)), ok(same(native.unpack(b), v))}
end
return out
`)
	res, err := script.Run(t.Context(), rdb, []string{"{enrollq:mp}"}).Slice()
	if err != nil {
		t.Fatal(err)
	}
	if len(res) < 40 {
		t.Fatalf("%d samples came back, want all", len(res))
	}
	for _, r := range res {
		f := r.([]any)
		name, native, pure := f[0].(string), f[1].(string), f[2].(string)
		if native != pure {
			t.Errorf("%s: cmsgpack wrote % x, the pure codec % x", name, head(native), head(pure))
		}
		for i, what := range []string{"cmsgpack reading its own", "pure reading its own", "pure reading cmsgpack's", "cmsgpack reading pure's"} {
			if f[3+i].(int64) != 1 {
				t.Errorf("%s: %s bytes does not give the value back", name, what)
			}
		}
	}
}

// TestMsgpackPureRefuses: the pure codec errors, naming the problem, on what
// it would not write as cmsgpack does (a non-integer number, a map) and on
// MessagePack it does not read (a double, a truncated string); it runs on
// any server, miniredis included.
func TestMsgpackPureRefuses(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t, redisDB)
	for _, c := range []struct{ lua, want string }{
		{`mp.pack(1.5)`, "not an integer"},
		{`mp.pack({a = 1})`, "not an array"},
		{`mp.pack({1, nil, 3})`, "an array with holes"},
		{`mp.unpack('\203\0\0\0\0\0\0\0\0')`, "unsupported MessagePack byte 0xcb"},
		{`mp.unpack('\165abc')`, "truncated"},
		{`mp.unpack('\220\0')`, "truncated"},
	} {
		s := redis.NewScript("local cmsgpack = nil\n" + msgpackLua + "\nreturn " + c.lua)
		err := s.Run(t.Context(), rdb, []string{"{enrollq:mp}"}).Err()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.lua, err, c.want)
		}
	}
}

// head shortens a long encoding for a failure message.
func head(s string) []byte {
	b := []byte(s)
	if len(b) > 24 {
		b = append(bytes.Clone(b[:24]), '.', '.', '.')
	}
	return b
}
