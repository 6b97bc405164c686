package statsd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

// Options are a StatsD source's settings.
type Options struct {
	Name       string // the source's name, the source label of its adapter_statsd_ metrics
	Standard   bool   // counters get _total when their mapped name lacks it
	ReadBuffer int    // UDP socket receive buffer in bytes (0: 8 MiB)
	Reg        prometheus.Registerer
	Log        *slog.Logger
}

// Source is a StatsD listener and the metrics it keeps.
type Source struct {
	store *Store
	udp   *net.UDPConn
	tcp   net.Listener
	log   *slog.Logger

	packets    *prometheus.CounterVec
	lines      prometheus.Counter
	lineErrors prometheus.Counter

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Listen checks the mapping and binds the UDP address (and TCP, unless
// tcpAddr is empty).
func Listen(udpAddr, tcpAddr string, m *Mapping, opt Options) (*Source, error) {
	rules, err := m.compile()
	if err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	defMapping := Mapping{Defaults: m.Defaults, Mappings: []Rule{{Match: "unused", Name: "unused"}}}
	defRules, err := defMapping.compile()
	if err != nil {
		return nil, fmt.Errorf("mapping defaults: %w", err)
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := opt.Reg
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	labels := prometheus.Labels{"source": opt.Name}
	s := &Source{log: log, conns: map[net.Conn]struct{}{}}
	s.packets = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "adapter_statsd_packets_total",
		Help: "StatsD packets (UDP) or connections' reads (TCP) received.", ConstLabels: labels}, []string{"transport"})
	s.lines = prometheus.NewCounter(prometheus.CounterOpts{Name: "adapter_statsd_lines_total",
		Help: "StatsD lines received.", ConstLabels: labels})
	s.lineErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "adapter_statsd_line_errors_total",
		Help: "StatsD lines that could not be parsed.", ConstLabels: labels})
	conflicts := prometheus.NewCounter(prometheus.CounterOpts{Name: "adapter_statsd_conflicts_total",
		Help: "StatsD samples dropped because their name was taken by a metric of another type.", ConstLabels: labels})
	for _, c := range []prometheus.Collector{s.packets, s.lines, s.lineErrors, conflicts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register statsd metrics: %w", err)
		}
	}
	s.store = newStore(rules, defRules[0], opt.Standard, conflicts)

	ua, err := net.ResolveUDPAddr("udp", udpAddr)
	if err != nil {
		return nil, fmt.Errorf("udp %s: %w", udpAddr, err)
	}
	s.udp, err = net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", udpAddr, err)
	}
	rb := opt.ReadBuffer
	if rb <= 0 {
		rb = 8 << 20
	}
	// A larger kernel buffer absorbs bursts while a scrape holds the store.
	_ = s.udp.SetReadBuffer(rb)
	if tcpAddr != "" {
		s.tcp, err = net.Listen("tcp", tcpAddr)
		if err != nil {
			s.udp.Close()
			return nil, fmt.Errorf("listen tcp %s: %w", tcpAddr, err)
		}
	}
	return s, nil
}

// UDPAddr is the bound UDP address.
func (s *Source) UDPAddr() net.Addr { return s.udp.LocalAddr() }

// TCPAddr is the bound TCP address, or nil.
func (s *Source) TCPAddr() net.Addr {
	if s.tcp == nil {
		return nil
	}
	return s.tcp.Addr()
}

// Close stops the listeners and closes open TCP connections.
func (s *Source) Close() {
	s.udp.Close()
	if s.tcp != nil {
		s.tcp.Close()
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
}

// Run receives until ctx ends, then closes everything and waits for its
// goroutines.
func (s *Source) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, s.Close)
	defer stop()
	s.wg.Go(s.readUDP)
	if s.tcp != nil {
		s.wg.Go(s.acceptTCP)
	}
	s.wg.Wait()
	return nil
}

func (s *Source) readUDP() {
	buf := make([]byte, 65535)
	var ev Event
	udpPackets := s.packets.WithLabelValues("udp")
	for {
		n, _, err := s.udp.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("statsd udp read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		udpPackets.Inc()
		s.handlePacket(buf[:n], &ev)
	}
}

// handlePacket applies every line of a packet under one lock.
func (s *Source) handlePacket(p []byte, ev *Event) {
	lines, bad := 0, 0
	s.store.mu.Lock()
	for len(p) > 0 {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p = p[:i], p[i+1:]
		} else {
			p = nil
		}
		line = bytes.TrimRight(line, "\r ")
		if len(line) == 0 {
			continue
		}
		lines++
		if err := ParseLine(line, ev); err != nil {
			bad++
			continue
		}
		s.store.handle(ev)
	}
	s.store.mu.Unlock()
	s.lines.Add(float64(lines))
	if bad > 0 {
		s.lineErrors.Add(float64(bad))
		s.log.Debug("statsd lines rejected", "count", bad)
	}
}

func (s *Source) acceptTCP() {
	tcpReads := s.packets.WithLabelValues("tcp")
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("statsd tcp accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serveTCP(c, tcpReads)
		})
	}
}

func (s *Source) serveTCP(c net.Conn, reads prometheus.Counter) {
	r := bufio.NewReaderSize(c, 64<<10)
	var ev Event
	for {
		// Idle clients are dropped after 5 minutes so a vanished peer
		// does not hold a goroutine forever.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			reads.Inc()
			s.handlePacket(line, &ev)
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				s.lineErrors.Inc()
				// Skip the rest of an over-long line.
				for errors.Is(err, bufio.ErrBufferFull) {
					_, err = r.ReadSlice('\n')
				}
				if err == nil {
					continue
				}
			}
			return
		}
	}
}

// Scrape appends the current metrics; it never fails.
func (s *Source) Scrape(_ context.Context, b *exposition.Batch) error {
	s.store.snapshot(b)
	return nil
}
