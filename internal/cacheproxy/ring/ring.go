package ring

import (
	"crypto/md5"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
)

// Distribution is how keys spread over a pool's servers.
type Distribution int

// The distributions nutcracker offers.
const (
	Ketama Distribution = iota
	Modula
	Random
)

// ParseDistribution reads a `distribution:` value.
func ParseDistribution(s string) (Distribution, error) {
	switch s {
	case "ketama":
		return Ketama, nil
	case "modula":
		return Modula, nil
	case "random":
		return Random, nil
	}
	return 0, fmt.Errorf("unknown distribution %q: use ketama, modula or random", s)
}

func (d Distribution) String() string {
	return [...]string{"ketama", "modula", "random"}[d]
}

// Server is one pool member as the ring sees it.
type Server struct {
	// Name is the ketama input: the alias given in the config, else
	// "host:port", else just "host" when the port is 11211.
	Name   string
	Weight int
}

// Ring maps keys to server indexes (in config order). It is immutable;
// a change of the live set builds a new one.
type Ring struct {
	dist     Distribution
	hash     HashFunc
	tag      [2]byte
	hasTag   bool
	nservers int
	points   []point // ketama, sorted by value
	first    []int32 // ketama: the first point of each bucket (see index)
	slots    []int32 // modula and random: live server indexes
}

type point struct {
	value uint32
	index int32
}

// KetamaPointsPerServer is nutcracker's nominal point count of a server of
// average weight.
const ketamaPointsPerServer = 160

// maxHostLen is where twemproxy truncates the "name-i" string it hashes.
const maxHostLen = 272

// New builds the ring of servers whose live flag is set (nil: all live).
// hashTag is "" or exactly two bytes.
func New(dist Distribution, hash HashFunc, hashTag string, servers []Server, live []bool) *Ring {
	r := &Ring{dist: dist, hash: hash, nservers: len(servers)}
	if len(hashTag) == 2 {
		r.tag = [2]byte{hashTag[0], hashTag[1]}
		r.hasTag = true
	}
	isLive := func(i int) bool { return live == nil || live[i] }
	var total, nlive int
	for i, s := range servers {
		if isLive(i) {
			total += s.Weight
			nlive++
		}
	}
	if nlive == 0 {
		return r
	}
	switch dist {
	case Ketama:
		for i, s := range servers {
			if !isLive(i) {
				continue
			}
			// float32 at every step, as the C code computes it: with 25
			// equal servers this yields 156 points each, not 160.
			pct := float32(s.Weight) / float32(total)
			p := pct * ketamaPointsPerServer
			p /= 4
			p *= float32(nlive)
			sum := float32(float64(p) + 0.0000000001)
			pps := uint32(float32(math.Floor(float64(sum))) * 4)
			buf := make([]byte, 0, len(s.Name)+12)
			for j := uint32(0); j < pps/4; j++ {
				buf = append(buf[:0], s.Name...)
				buf = append(buf, '-')
				buf = strconv.AppendUint(buf, uint64(j), 10)
				if len(buf) > maxHostLen {
					buf = buf[:maxHostLen]
				}
				d := md5.Sum(buf)
				for x := range 4 {
					v := uint32(d[4*x]) | uint32(d[4*x+1])<<8 | uint32(d[4*x+2])<<16 | uint32(d[4*x+3])<<24
					r.points = append(r.points, point{v, int32(i)})
				}
			}
		}
		// Equal values from two servers are the one place where qsort's
		// order is unspecified; a stable sort keeps config order (odds of a
		// tie: about 3e-5 per pool).
		slices.SortStableFunc(r.points, func(a, b point) int {
			switch {
			case a.value < b.value:
				return -1
			case a.value > b.value:
				return 1
			}
			return 0
		})
		r.index()
	case Modula:
		for i, s := range servers {
			if isLive(i) {
				for range s.Weight {
					r.slots = append(r.slots, int32(i))
				}
			}
		}
	case Random:
		for i := range servers {
			if isLive(i) {
				r.slots = append(r.slots, int32(i))
			}
		}
	}
	return r
}

// HashKey is the hash that places key: the hash-tagged part when the key
// has a non-empty one, else the whole key; 0 for an empty key.
func (r *Ring) HashKey(key []byte) uint32 {
	if r.hasTag {
		if a := indexByte(key, r.tag[0]); a >= 0 {
			if b := indexByte(key[a+1:], r.tag[1]); b > 0 {
				key = key[a+1 : a+1+b]
			}
		}
	}
	if len(key) == 0 {
		return 0
	}
	return r.hash(key)
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// Locate returns the config index of the server holding key, or -1 when
// no server is live.
func (r *Ring) Locate(key []byte) int {
	if r.nservers == 1 {
		return 0
	}
	return r.LocateHash(r.HashKey(key))
}

// bucketBits sets the buckets of the ketama index: 4,096 of them, a few
// points each at most for any pool of a sensible size.
const bucketBits = 12

// index finds for each bucket of hash values (its top bucketBits bits) its
// first point, so that a lookup scans a bucket instead of searching the
// whole continuum.
func (r *Ring) index() {
	r.first = make([]int32, 1<<bucketBits+1)
	j := 0
	for b := range 1 << bucketBits {
		low := uint32(b) << (32 - bucketBits)
		for j < len(r.points) && r.points[j].value < low {
			j++
		}
		r.first[b] = int32(j)
	}
	r.first[1<<bucketBits] = int32(len(r.points))
}

// LocateHash is Locate for a hash already computed by HashKey.
func (r *Ring) LocateHash(h uint32) int {
	if r.nservers == 1 {
		return 0
	}
	switch r.dist {
	case Ketama:
		n := len(r.points)
		if n == 0 {
			return -1
		}
		// The first point at or above h: in h's bucket, or the next
		// bucket's first.
		b := h >> (32 - bucketBits)
		lo, hi := int(r.first[b]), int(r.first[b+1])
		for lo < hi && r.points[lo].value < h {
			lo++
		}
		if lo == n {
			lo = 0
		}
		return int(r.points[lo].index)
	case Modula:
		if len(r.slots) == 0 {
			return -1
		}
		return int(r.slots[h%uint32(len(r.slots))])
	default:
		if len(r.slots) == 0 {
			return -1
		}
		return int(r.slots[rand.IntN(len(r.slots))])
	}
}

// Points returns how many continuum points each server has (ketama), for
// tests and diagnostics.
func (r *Ring) Points() map[int]int {
	m := map[int]int{}
	for _, p := range r.points {
		m[int(p.index)]++
	}
	return m
}
