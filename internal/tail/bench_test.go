package tail

import (
	"strings"
	"testing"
)

func BenchmarkFramer(b *testing.B) {
	data := []byte(strings.Repeat(strings.Repeat("x", 199)+"\n", 320)) // 64 KiB
	f := NewFramer(64 << 10)
	var lines []Line
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		lines, _, _ = f.Frame(data, lines[:0])
	}
}
