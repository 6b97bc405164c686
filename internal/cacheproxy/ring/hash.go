// Package ring places keys on cache servers exactly as twemproxy
// (nutcracker) 0.5.0 does: its twelve hash functions, its hash tags and its
// ketama, modula and random distributions.
package ring

import (
	"crypto/md5"
	"fmt"
	"hash/crc32"
	"strings"
)

// HashFunc hashes a key to 32 bits. The functions below reproduce
// twemproxy's C code bit for bit, including its habit of widening a plain
// (signed) char: a byte >= 0x80 becomes 0xffffff80.. before it is mixed in.
// Treating bytes as unsigned would move most keys holding such bytes.
type HashFunc func(key []byte) uint32

// sx widens b as C widens a signed char to 32 bits.
func sx(b byte) uint32 { return uint32(int32(int8(b))) }

// Hashes maps each `hash:` name nutcracker accepts to its function.
var Hashes = map[string]HashFunc{
	"one_at_a_time": OneAtATime,
	"md5":           MD5,
	"crc16":         CRC16,
	"crc32":         CRC32,
	"crc32a":        CRC32a,
	"fnv1_64":       FNV1_64,
	"fnv1a_64":      FNV1a_64,
	"fnv1_32":       FNV1_32,
	"fnv1a_32":      FNV1a_32,
	"hsieh":         Hsieh,
	"murmur":        Murmur,
	"jenkins":       Jenkins,
}

// HashByName returns the named hash function.
func HashByName(name string) (HashFunc, error) {
	if h, ok := Hashes[name]; ok {
		return h, nil
	}
	return nil, fmt.Errorf("unknown hash %q: use one of %s", name, hashNames())
}

func hashNames() string {
	return strings.Join([]string{"one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64",
		"fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins"}, ", ")
}

// OneAtATime is Jenkins' one-at-a-time hash.
func OneAtATime(key []byte) uint32 {
	var v uint32
	for _, b := range key {
		v += sx(b)
		v += v << 10
		v ^= v >> 6
	}
	v += v << 3
	v ^= v >> 11
	v += v << 15
	return v
}

// MD5 is the first four bytes of the key's MD5 digest, little-endian.
func MD5(key []byte) uint32 {
	d := md5.Sum(key)
	return uint32(d[0]) | uint32(d[1])<<8 | uint32(d[2])<<16 | uint32(d[3])<<24
}

var crc16Table = func() (t [256]uint32) {
	// CRC-16/XMODEM (polynomial 0x1021, MSB first).
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = uint32(c)
	}
	return t
}()

// CRC16 is twemproxy 0.5.0's CRC-16/XMODEM, computed in a 32-bit register
// that is never masked to 16 bits: the high bits it accumulates are part of
// the hash, and so of the placement.
func CRC16(key []byte) uint32 {
	var c uint32
	for _, b := range key {
		c = c<<8 ^ crc16Table[byte(c>>8)^b]
	}
	return c
}

// CRC32 is libmemcached's variant: bits 16..30 of the IEEE CRC-32.
func CRC32(key []byte) uint32 {
	return (crc32.ChecksumIEEE(key) >> 16) & 0x7fff
}

// CRC32a is the plain IEEE CRC-32.
func CRC32a(key []byte) uint32 { return crc32.ChecksumIEEE(key) }

// FNV1_64 keeps 64 bits of state and returns the low 32.
func FNV1_64(key []byte) uint32 {
	h := uint64(0xcbf29ce484222325)
	for _, b := range key {
		h *= 0x100000001b3
		h ^= uint64(int64(int8(b)))
	}
	return uint32(h)
}

// FNV1a_64 is, in twemproxy, a 32-bit FNV-1a seeded with the low half of
// the 64-bit offset basis and multiplied by the low half of the 64-bit prime.
func FNV1a_64(key []byte) uint32 {
	h := uint32(0x84222325)
	for _, b := range key {
		h ^= sx(b)
		h *= 0x1b3
	}
	return h
}

// FNV1_32 is the 32-bit FNV-1.
func FNV1_32(key []byte) uint32 {
	h := uint32(2166136261)
	for _, b := range key {
		h *= 16777619
		h ^= sx(b)
	}
	return h
}

// FNV1a_32 is the 32-bit FNV-1a.
func FNV1a_32(key []byte) uint32 {
	h := uint32(2166136261)
	for _, b := range key {
		h ^= sx(b)
		h *= 16777619
	}
	return h
}

func get16(b []byte) uint32 { return uint32(b[1])<<8 | uint32(b[0]) }

// Hsieh is Paul Hsieh's SuperFastHash.
func Hsieh(key []byte) uint32 {
	if len(key) == 0 {
		return 0
	}
	var h uint32
	rem := len(key) & 3
	for n := len(key) >> 2; n > 0; n-- {
		h += get16(key)
		tmp := get16(key[2:])<<11 ^ h
		h = h<<16 ^ tmp
		key = key[4:]
		h += h >> 11
	}
	switch rem {
	case 3:
		h += get16(key)
		h ^= h << 16
		h ^= sx(key[2]) << 18
		h += h >> 11
	case 2:
		h += get16(key)
		h ^= h << 11
		h += h >> 17
	case 1:
		h += uint32(key[0])
		h ^= h << 10
		h += h >> 1
	}
	h ^= h << 3
	h += h >> 5
	h ^= h << 4
	h += h >> 17
	h ^= h << 25
	h += h >> 6
	return h
}

// Murmur is MurmurHash2 seeded with 0xdeadbeef times the key length.
func Murmur(key []byte) uint32 {
	const m = 0x5bd1e995
	n := uint32(len(key))
	h := (0xdeadbeef * n) ^ n
	for len(key) >= 4 {
		k := uint32(key[0]) | uint32(key[1])<<8 | uint32(key[2])<<16 | uint32(key[3])<<24
		k *= m
		k ^= k >> 24
		k *= m
		h *= m
		h ^= k
		key = key[4:]
	}
	switch len(key) {
	case 3:
		h ^= uint32(key[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(key[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(key[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

func rot(x uint32, k uint) uint32 { return x<<k | x>>(32-k) }

// Jenkins is Bob Jenkins' lookup3 hashlittle with an initial value of 13,
// read little-endian.
func Jenkins(key []byte) uint32 {
	a := 0xdeadbeef + uint32(len(key)) + 13
	b, c := a, a
	for len(key) > 12 {
		a += le32(key[0:4])
		b += le32(key[4:8])
		c += le32(key[8:12])
		a -= c
		a ^= rot(c, 4)
		c += b
		b -= a
		b ^= rot(a, 6)
		a += c
		c -= b
		c ^= rot(b, 8)
		b += a
		a -= c
		a ^= rot(c, 16)
		c += b
		b -= a
		b ^= rot(a, 19)
		a += c
		c -= b
		c ^= rot(b, 4)
		b += a
		key = key[12:]
	}
	if len(key) == 0 {
		return c
	}
	var tail [12]byte
	copy(tail[:], key)
	a += le32(tail[0:4])
	b += le32(tail[4:8])
	c += le32(tail[8:12])
	c ^= b
	c -= rot(b, 14)
	a ^= c
	a -= rot(c, 11)
	b ^= a
	b -= rot(a, 25)
	c ^= b
	c -= rot(b, 16)
	a ^= c
	a -= rot(c, 4)
	b ^= a
	b -= rot(a, 14)
	c ^= b
	c -= rot(b, 24)
	return c
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
