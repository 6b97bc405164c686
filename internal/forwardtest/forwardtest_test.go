package forwardtest

import (
	"context"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/tinylib/msgp/msgp"
)

// TestFluentLoggerGolang: the reference client's Message mode, with
// EventTime and RequestAck, is received and acknowledged.
func TestFluentLoggerGolang(t *testing.T) {
	t.Parallel()
	r, err := Start("127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	host, port := splitAddr(t, r.Addr())
	for _, ack := range []bool{false, true} {
		lg, err := fluent.New(fluent.Config{FluentHost: host, FluentPort: port, RequestAck: ack, SubSecondPrecision: true,
			Timeout: 5 * time.Second, WriteTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ts := time.Date(2026, 11, 26, 1, 2, 3, 456789012, time.UTC)
		if err := lg.PostWithTime("app.web", ts, map[string]string{"message": "hello"}); err != nil {
			t.Fatal(err)
		}
		lg.Close()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := r.WaitCount(ctx, 2); err != nil {
		t.Fatal(err)
	}
	recs := r.Records()
	for _, rec := range recs {
		if rec.Tag != "app.web" || rec.Fields["message"] != "hello" || rec.Mode != "message" {
			t.Fatalf("record %+v", rec)
		}
		if !rec.Time.Equal(time.Date(2026, 11, 26, 1, 2, 3, 456789012, time.UTC)) {
			t.Fatalf("time %v lost precision", rec.Time)
		}
	}
	// The two loggers' connections are served concurrently: find the
	// acked one by its chunk id.
	if recs[0].Chunk == "" && recs[1].Chunk == "" {
		t.Fatal("RequestAck sent no chunk id")
	}
}

func splitAddr(t *testing.T, addr string) (string, int) {
	t.Helper()
	var port int
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			for _, c := range addr[i+1:] {
				port = port*10 + int(c-'0')
			}
			return addr[:i], port
		}
	}
	t.Fatalf("bad addr %s", addr)
	return "", 0
}

// TestModes feeds each mode and time form by hand.
func TestModes(t *testing.T) {
	t.Parallel()
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	et := fluent.EventTime(ts)
	entry := func(b []byte, withMeta bool) []byte {
		b = msgp.AppendArrayHeader(b, 2)
		if withMeta {
			b = msgp.AppendArrayHeader(b, 2)
			b, _ = msgp.AppendExtension(b, &et)
			b = msgp.AppendMapHeader(b, 1)
			b = msgp.AppendString(b, "otel")
			b = msgp.AppendBool(b, true)
		} else {
			b, _ = msgp.AppendExtension(b, &et)
		}
		b = msgp.AppendMapHeader(b, 1)
		b = msgp.AppendString(b, "k")
		return msgp.AppendString(b, "v")
	}
	var entries []byte
	entries = entry(entries, false)
	entries = entry(entries, true)
	tests := []struct {
		name string
		msg  func() []byte
		mode string
		n    int
	}{
		{"message int time", func() []byte {
			b := msgp.AppendArrayHeader(nil, 3)
			b = msgp.AppendString(b, "t")
			b = msgp.AppendInt64(b, ts.Unix())
			b = msgp.AppendMapHeader(b, 1)
			b = msgp.AppendString(b, "k")
			return msgp.AppendString(b, "v")
		}, "message", 1},
		{"forward", func() []byte {
			b := msgp.AppendArrayHeader(nil, 3)
			b = msgp.AppendString(b, "t")
			b = msgp.AppendArrayHeader(b, 2)
			b = append(b, entries...)
			return chunkOpt(b, "c1", "")
		}, "forward", 2},
		{"packed bin", func() []byte {
			b := msgp.AppendArrayHeader(nil, 3)
			b = msgp.AppendString(b, "t")
			b = msgp.AppendBytes(b, entries)
			return chunkOpt(b, "c2", "")
		}, "packed", 2},
		{"packed str", func() []byte {
			b := msgp.AppendArrayHeader(nil, 2)
			b = msgp.AppendString(b, "t")
			return msgp.AppendStringFromBytes(b, entries)
		}, "packed", 2},
		{"compressed", func() []byte {
			b := msgp.AppendArrayHeader(nil, 3)
			b = msgp.AppendString(b, "t")
			b = msgp.AppendBytes(b, gz(entries))
			return chunkOpt(b, "c3", "gzip")
		}, "compressed", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := Start("127.0.0.1:0", Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			c := dial(t, r.Addr())
			defer c.Close()
			c.Write(append([]byte{0xc0}, tt.msg()...)) // a heartbeat nil first
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := r.WaitCount(ctx, int64(tt.n)); err != nil {
				t.Fatal(err)
			}
			for i, rec := range r.Records() {
				if rec.Mode != tt.mode || rec.Fields["k"] != "v" || rec.Time.Unix() != ts.Unix() {
					t.Fatalf("record %+v", rec)
				}
				if tt.mode != "message" && !rec.Time.Equal(ts) {
					t.Fatalf("time %v", rec.Time)
				}
				if i == 1 && rec.Meta == nil {
					t.Fatal("metadata of [EventTime, metadata] lost")
				}
			}
			if rec := r.Records()[0]; rec.Chunk != "" {
				var a fluent.AckResp
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if err := a.DecodeMsg(msgp.NewReader(c)); err != nil || a.Ack != rec.Chunk {
					t.Fatalf("ack %q, %v; want %q", a.Ack, err, rec.Chunk)
				}
			}
		})
	}
}
