package logpipe

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/logrecord"
	"github.com/podkit/podkit/internal/ship"
	"github.com/podkit/podkit/internal/tail"
)

// discard is an output that drops what it is given, to time the pipeline.
type discard struct{ enc ship.Encoder }

func (d discard) Name() string                                                  { return "discard" }
func (d discard) NewEncoder() ship.Encoder                                      { return d.enc }
func (d discard) Submit(context.Context, string, []byte, int, []ship.Ack) error { return nil }
func (d discard) Run(ctx context.Context) error                                 { <-ctx.Done(); return nil }
func (d discard) Drain(context.Context) error                                   { return nil }
func (d discard) Ready(context.Context) error                                   { return nil }

type noAck struct{}

func (noAck) Retain()  {}
func (noAck) Release() {}
func (noAck) Fail()    {}

func benchPipeline(b *testing.B, parser string, enc ship.Encoder) {
	p := New(Config{
		NewParser: func() logrecord.Parser { p, _ := logrecord.NewParser(parser, "", "time", ""); return p },
		Fields:    [][2]string{{"pod_name", "web-0"}, {"namespace_name", "shop"}},
		PathKey:   "file", Tag: "t", Outputs: []ship.Output{discard{enc}},
	})
	h := p.NewHandler(tail.FileInfo{Path: "/logs/access.log"}).(*handler)
	var lines []tail.Line
	for i := range 320 {
		lines = append(lines, tail.Line{Data: fmt.Appendf(nil, `10.1.2.3 - - [26/Nov/2026:10:00:%02d +0000] "GET /api/v1/items/%08d HTTP/1.1" 200 1234 "-" "Mozilla/5.0 (X11; Linux x86_64)"`, i/100, i)})
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(lines) * len(lines[0].Data)))
	now := time.Now()
	for b.Loop() {
		h.begin()
		for _, l := range lines {
			h.line(l.Data, false, now)
		}
		h.acks = append(h.acks[:0], noAck{})
		h.submit(context.Background())
	}
}

// BenchmarkPipeline times parse + enrich + encode of 320 lines (one read).
func BenchmarkPipeline(b *testing.B) {
	for _, parser := range []string{"raw", "nginx"} {
		b.Run(parser+"/forward", func(b *testing.B) {
			f, _ := ship.NewForward(ship.ForwardConfig{Addrs: []string{"127.0.0.1:1"}})
			benchPipeline(b, parser, f.NewEncoder())
		})
	}
	b.Run("nginx/json", func(b *testing.B) { benchPipeline(b, "nginx", ship.JSONEncoder{}) })
}
