package examplepod

import (
	"testing"

	"github.com/podkit/podkit/internal/testserver"
)

func TestMemcachedSetGet(t *testing.T) {
	t.Parallel()
	mc := testserver.Memcached(t)
	if _, found, err := MemcachedGet(mc.Addr, "/cache/k"); err != nil || found {
		t.Fatalf("get before set = found %v, %v; want a miss", found, err)
	}
	for _, v := range []string{"value", "", "two\r\nlines"} {
		if err := MemcachedSet(mc.Addr, "/cache/k", v); err != nil {
			t.Fatal(err)
		}
		got, found, err := MemcachedGet(mc.Addr, "/cache/k")
		if err != nil || !found || got != v {
			t.Errorf("get = %q, %v, %v; want %q", got, found, err, v)
		}
	}
	if err := MemcachedSet(mc.Addr, "bad key", "v"); err == nil {
		t.Error("set of a key with a space succeeded; want memcached's error")
	}
}
