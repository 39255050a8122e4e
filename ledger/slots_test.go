package ledger

import (
	"strings"
	"testing"
)

// crc16 is Redis Cluster's key hash (CRC-16/XMODEM).
func crc16(b string) uint16 {
	var crc uint16
	for i := 0; i < len(b); i++ {
		crc ^= uint16(b[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// slot is the Cluster slot of a key, hash tags included.
func slot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) % 16384
}

func TestCRC16(t *testing.T) {
	t.Parallel()
	if got := crc16("123456789"); got != 0x31c3 {
		t.Fatalf("crc16 = %#x, want 0x31c3 (Redis Cluster spec)", got)
	}
	if slot("{user1000}.following") != slot("{user1000}.followers") || slot("foo{}{bar}") != crc16("foo{}{bar}")%16384 {
		t.Fatal("hash tag rules")
	}
}

// TestEachScriptStaysOnOneSlot checks the keys every script is given (and
// the keys the sweeper and readers pair with them) for many sessions and
// accounts: all on one Cluster slot.
func TestEachScriptStaysOnOneSlot(t *testing.T) {
	t.Parallel()
	for _, buckets := range []int{1, 8, DefaultBuckets} {
		l, err := New(nil, Options{Buckets: buckets})
		if err != nil {
			t.Fatal(err)
		}
		slots := map[uint16]bool{}
		for i := range 500 {
			s, err := parseSession(newSession())
			if err != nil {
				t.Fatal(err)
			}
			ah := accountHash("account-" + strings.Repeat("x", i%7) + string(rune('a'+i%26)))
			sh, b := s.shard(), l.bucket(s)
			sets := map[string][]string{
				"queued/claim":             append(l.transitionKeys(s), l.indexKey(s, ah)),
				"renew/status":             l.recordKeys(s),
				"settle/requeue/reconcile": l.transitionKeys(s),
				"purge/unqueue":            {l.deadKey(sh, b), l.liveKey(sh, b), l.indexKey(s, ah), l.runsKey(sh), l.deadIndexKey(sh)},
				"expire (live)":            {l.liveKey(sh, b), l.indexKey(s, ah), l.runsKey(sh)},
				"expire (done)":            {l.doneKey(sh, b), l.indexKey(s, ah), l.runsKey(sh)},
			}
			for name, keys := range sets {
				want := slot(keys[0])
				for _, k := range keys {
					if slot(k) != want {
						t.Fatalf("%s: %q is on slot %d, %q on %d", name, keys[0], want, k, slot(k))
					}
				}
				slots[want] = true
			}
		}
		if len(slots) != Shards {
			t.Fatalf("the %d shards use %d slots; each should have its own", Shards, len(slots))
		}
	}
}
