package ship

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Output takes encoded events and acknowledges them.
type Output interface {
	// Name is the output's metric label.
	Name() string
	// NewEncoder returns an encoder for one goroutine.
	NewEncoder() Encoder
	// Submit takes data, n events encoded by an encoder of this output,
	// all with tag. It retains acks until the data is acknowledged. It
	// blocks while the output's buffer is full, until ctx ends.
	Submit(ctx context.Context, tag string, data []byte, n int, acks []Ack) error
	// Run delivers until ctx ends.
	Run(ctx context.Context) error
	// Drain sends what is buffered and waits until everything submitted is
	// acknowledged or ctx ends.
	Drain(ctx context.Context) error
	// Ready says whether the output accepts data now.
	Ready(ctx context.Context) error
}

// Stdout writes events to w (the container's stdout, for kubectl logs).
// Data is acknowledged once written.
type Stdout struct {
	w    io.Writer
	raw  bool
	log  *slog.Logger
	m    outMetrics
	mu   sync.Mutex
	fail atomic.Bool
}

// NewStdout returns a stdout output writing JSON lines, or the raw text
// when raw is set.
func NewStdout(w io.Writer, raw bool, m *Metrics, log *slog.Logger) *Stdout {
	return &Stdout{w: w, raw: raw, log: log, m: m.For("stdout")}
}

// Name implements Output.
func (s *Stdout) Name() string { return "stdout" }

// NewEncoder implements Output.
func (s *Stdout) NewEncoder() Encoder {
	if s.raw {
		return RawEncoder{}
	}
	return JSONEncoder{}
}

// Submit implements Output: it writes at once, retrying a failed write
// every second, so a line is never dropped.
func (s *Stdout) Submit(ctx context.Context, _ string, data []byte, n int, acks []Ack) error {
	if n == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		w, err := s.w.Write(data)
		if err == nil {
			s.fail.Store(false)
			s.m.shipped.Add(float64(n))
			s.m.acked.Add(float64(n))
			return nil
		}
		data = data[w:]
		s.m.errors.Inc()
		if !s.fail.Swap(true) {
			s.log.Error("write to stdout", "err", err)
		}
		select {
		case <-ctx.Done():
			for _, a := range acks {
				a.Fail()
			}
			return fmt.Errorf("stdout: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// Run implements Output.
func (s *Stdout) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// Drain implements Output.
func (s *Stdout) Drain(context.Context) error { return nil }

// Ready implements Output.
func (s *Stdout) Ready(context.Context) error {
	if s.fail.Load() {
		return fmt.Errorf("stdout write failing")
	}
	return nil
}
