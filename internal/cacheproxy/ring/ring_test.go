package ring

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func servers(n int) []Server {
	s := make([]Server, n)
	for i := range s {
		s[i] = Server{Name: fmt.Sprintf("10.0.0.%d:6379", i+1), Weight: 1}
	}
	return s
}

func TestHashTag(t *testing.T) {
	t.Parallel()
	r := New(Ketama, FNV1a_64, "{}", servers(3), nil)
	tests := []struct {
		key, hashed string
	}{
		{"user:{42}:name", "42"},
		{"{42}", "42"},
		{"a{b}{c}", "b"},
		{"{}x", "{}x"}, // empty tag: the whole key
		{"{unclosed", "{unclosed"},
		{"no-tag", "no-tag"},
		{"}{x}", "x"},
	}
	for _, tt := range tests {
		if got, want := r.HashKey([]byte(tt.key)), FNV1a_64([]byte(tt.hashed)); got != want {
			t.Errorf("%q hashed as something other than %q", tt.key, tt.hashed)
		}
	}
	if r.HashKey(nil) != 0 {
		t.Error("empty key must hash to 0")
	}
}

func TestPointsAndLiveness(t *testing.T) {
	t.Parallel()
	// Equal weights get 160 points each, except where float32 rounding
	// gives 156 (25 servers, as nutcracker measures).
	for _, tt := range []struct{ n, want int }{{3, 160}, {10, 160}, {25, 156}, {47, 156}, {48, 160}} {
		pts := New(Ketama, FNV1a_64, "", servers(tt.n), nil).Points()
		if pts[0] != tt.want {
			t.Errorf("%d servers: %d points, want %d", tt.n, pts[0], tt.want)
		}
	}
	w := servers(3)
	w[0].Weight, w[1].Weight, w[2].Weight = 1, 2, 3
	pts := New(Ketama, FNV1a_64, "", w, nil).Points()
	if pts[0] != 80 || pts[1] != 160 || pts[2] != 240 {
		t.Errorf("weighted points %v", pts)
	}
	// A dead server has no points and its keys move; others stay.
	all := New(Ketama, FNV1a_64, "", servers(3), nil)
	some := New(Ketama, FNV1a_64, "", servers(3), []bool{true, false, true})
	for i := range 1000 {
		k := []byte(fmt.Sprint("k", i))
		a, b := all.Locate(k), some.Locate(k)
		if b == 1 || (a != 1 && a != b) {
			t.Fatalf("key %s: all live -> %d, server 1 dead -> %d", k, a, b)
		}
	}
	if New(Modula, FNV1a_64, "", servers(3), []bool{false, false, false}).Locate([]byte("x")) != -1 {
		t.Error("no live server must give -1")
	}
	if New(Ketama, FNV1a_64, "", servers(1), []bool{false}).Locate([]byte("x")) != 0 {
		t.Error("a one-server pool always uses it, as nutcracker does")
	}
	m := New(Modula, CRC32a, "", w, nil)
	seen := map[int]int{}
	for i := range 6000 {
		seen[m.Locate([]byte(fmt.Sprint(i)))]++
	}
	if seen[2] < seen[0]*2 {
		t.Errorf("modula ignores weights: %v", seen)
	}
	rnd := New(Random, FNV1a_64, "", servers(3), []bool{true, false, true})
	for range 100 {
		if rnd.Locate([]byte("x")) == 1 {
			t.Fatal("random picked a dead server")
		}
	}
}

func TestHashByName(t *testing.T) {
	t.Parallel()
	for name := range Hashes {
		if _, err := HashByName(name); err != nil {
			t.Error(err)
		}
	}
	if _, err := HashByName("sha1"); err == nil {
		t.Error("sha1 accepted")
	}
	if _, err := ParseDistribution("vnode"); err == nil {
		t.Error("vnode accepted")
	}
}

func BenchmarkLocate(b *testing.B) {
	r := New(Ketama, FNV1a_64, "", servers(3), nil)
	key := []byte("user:1234567:profile")
	b.ReportAllocs()
	for b.Loop() {
		r.Locate(key)
	}
}

func BenchmarkHashes(b *testing.B) {
	key := []byte("user:1234567:profile")
	for name, h := range Hashes {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h(key)
			}
		})
	}
}

// TestIndexFindsWhatASearchFinds: the bucket index gives, for any hash,
// the point a search of the whole continuum gives: the first at or above
// the hash, wrapping past the last.
func TestIndexFindsWhatASearchFinds(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{2, 3, 7, 48, 200} {
		for _, live := range [][]bool{nil, deadOne(n)} {
			r := New(Ketama, FNV1a_64, "", servers(n), live)
			search := func(h uint32) int {
				i, _ := slices.BinarySearchFunc(r.points, h, func(p point, h uint32) int { return cmp.Compare(p.value, h) })
				if i == len(r.points) {
					i = 0
				}
				return int(r.points[i].index)
			}
			hs := []uint32{0, 1, math.MaxUint32, math.MaxUint32 - 1}
			for _, p := range r.points {
				hs = append(hs, p.value, p.value-1, p.value+1)
			}
			for range 20000 {
				hs = append(hs, rng.Uint32())
			}
			for _, h := range hs {
				if got, want := r.LocateHash(h), search(h); got != want {
					t.Fatalf("%d servers (live %v): hash %#x: server %d, a search gives %d", n, live, h, got, want)
				}
			}
		}
	}
}

func deadOne(n int) []bool {
	live := make([]bool, n)
	for i := range live {
		live[i] = i != 1
	}
	return live
}
