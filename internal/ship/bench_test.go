package ship

import (
	"testing"
	"time"

	"github.com/podkit/podkit/internal/logrecord"
)

func benchEvent() *Event {
	var r logrecord.Record
	r.Str("message", []byte(`10.1.2.3 - - [26/Nov/2026:10:00:00 +0000] "GET /api/v1/items/00001234 HTTP/1.1" 200 1234 "-" "Mozilla/5.0"`))
	r.Int("status", 200)
	r.Str("pod_name", []byte("web-0"))
	r.Str("namespace_name", []byte("shop"))
	r.Str("file", []byte("/var/log/app/access.log"))
	return &Event{Rec: &r, Time: time.Unix(1764151200, 123456789)}
}

func BenchmarkEntryEncoder(b *testing.B) {
	ev := benchEvent()
	enc := entryEncoder{eventTime: true}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = enc.Append(buf[:0], ev)
	}
}

func BenchmarkJSONEncoder(b *testing.B) {
	ev := benchEvent()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = JSONEncoder{}.Append(buf[:0], ev)
	}
}
