// Package memcached reads memcached's `stats` and exposes it under
// memcached_exporter's metric names.
package memcached

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/podkit/podkit/internal/adapter/exposition"
	"github.com/podkit/podkit/internal/adapter/fetch"
)

// Stats is memcached's `stats` answer, key to value.
type Stats map[string]string

// ErrProtocol is wrapped by every malformed answer.
var ErrProtocol = errors.New("unexpected memcached answer")

// ReadStats reads `STAT key value` lines up to END.
func ReadStats(r *bufio.Reader) (Stats, error) {
	st := make(Stats, 100)
	for range 10000 {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return nil, fmt.Errorf("read stats: %w", err)
		}
		s := strings.TrimRight(string(line), "\r\n")
		if s == "END" {
			return st, nil
		}
		rest, ok := strings.CutPrefix(s, "STAT ")
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrProtocol, trunc(s))
		}
		k, v, ok := strings.Cut(rest, " ")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: %q", ErrProtocol, trunc(s))
		}
		st[k] = v
	}
	return nil, fmt.Errorf("%w: no END after 10000 lines", ErrProtocol)
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// Source reads stats from a memcached server.
type Source struct {
	addr     string
	ns       string
	standard bool
}

// New returns a source for addr (host:port); namespace is normally
// "memcached". standard types uptime as a gauge (it resets on restart and
// lacks _total) instead of memcached_exporter's counter.
func New(addr, namespace string, standard bool) *Source {
	return &Source{addr: addr, ns: namespace, standard: standard}
}

type metric struct {
	key, name, help string
	typ             exposition.Type
}

var metrics = []metric{
	{"uptime", "_uptime_seconds", "Number of seconds since the server started.", exposition.Counter},
	{"time", "_time_seconds", "Current UNIX time according to the server.", exposition.Gauge},
	{"curr_connections", "_current_connections", "Current number of open connections.", exposition.Gauge},
	{"total_connections", "_connections_total", "Total number of connections opened since the server started running.", exposition.Counter},
	{"rejected_connections", "_connections_rejected_total", "Total number of connections rejected because of -c.", exposition.Counter},
	{"max_connections", "_max_connections", "Maximum number of clients allowed.", exposition.Gauge},
	{"bytes", "_current_bytes", "Current number of bytes used to store items.", exposition.Gauge},
	{"limit_maxbytes", "_limit_bytes", "Number of bytes this server is allowed to use for storage.", exposition.Gauge},
	{"curr_items", "_current_items", "Current number of items stored.", exposition.Gauge},
	{"total_items", "_items_total", "Total number of items stored since the server started.", exposition.Counter},
	{"evictions", "_items_evicted_total", "Total number of valid items removed from cache to free memory for new items.", exposition.Counter},
	{"reclaimed", "_items_reclaimed_total", "Total number of times an entry was stored using memory from an expired entry.", exposition.Counter},
	{"bytes_read", "_read_bytes_total", "Total number of bytes read by this server from network.", exposition.Counter},
	{"bytes_written", "_written_bytes_total", "Total number of bytes sent by this server to network.", exposition.Counter},
	{"threads", "_threads", "Number of worker threads requested.", exposition.Gauge},
	{"rusage_user", "_process_user_cpu_seconds_total", "Accumulated user time for this process.", exposition.Counter},
	{"rusage_system", "_process_system_cpu_seconds_total", "Accumulated system time for this process.", exposition.Counter},
}

// commands maps stats keys to memcached_commands_total{command,status}.
var commands = []struct{ key, command, status string }{
	{"get_hits", "get", "hit"}, {"get_misses", "get", "miss"}, {"get_expired", "get", "expired"}, {"get_flushed", "get", "flushed"},
	{"delete_hits", "delete", "hit"}, {"delete_misses", "delete", "miss"},
	{"incr_hits", "incr", "hit"}, {"incr_misses", "incr", "miss"},
	{"decr_hits", "decr", "hit"}, {"decr_misses", "decr", "miss"},
	{"cas_hits", "cas", "hit"}, {"cas_misses", "cas", "miss"}, {"cas_badval", "cas", "badval"},
	{"touch_hits", "touch", "hit"}, {"touch_misses", "touch", "miss"},
	{"cmd_set", "set", "hit"}, {"cmd_flush", "flush", "hit"},
}

// UpHelp is memcached_exporter's HELP for memcached_up.
func (s *Source) UpHelp() string { return "Could the memcached server be reached." }

// Names lists the families the source produces.
func (s *Source) Names() []string {
	names := []string{s.ns + "_version", s.ns + "_commands_total"}
	for _, m := range metrics {
		names = append(names, s.ns+m.name)
	}
	return names
}

// Scrape runs `stats` (and `stats settings` for old servers without
// max_connections) on a fresh connection.
func (s *Source) Scrape(ctx context.Context, b *exposition.Batch) error {
	conn, stop, err := fetch.Dial(ctx, s.addr)
	if err != nil {
		return err
	}
	defer stop()
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 8<<10)
	if _, err := conn.Write([]byte("stats\r\n")); err != nil {
		return fmt.Errorf("memcached %s: %w", s.addr, err)
	}
	st, err := ReadStats(r)
	if err != nil {
		return fmt.Errorf("memcached %s: %w", s.addr, err)
	}
	if _, ok := st["max_connections"]; !ok {
		if _, err := conn.Write([]byte("stats settings\r\n")); err != nil {
			return fmt.Errorf("memcached %s: %w", s.addr, err)
		}
		set, err := ReadStats(r)
		if err != nil {
			return fmt.Errorf("memcached %s stats settings: %w", s.addr, err)
		}
		if v, ok := set["maxconns"]; ok {
			st["max_connections"] = v
		}
	}
	Append(b, s.ns, s.standard, st)
	return nil
}

// Append adds the metrics of st to b. Keys the server does not report are
// left out rather than reported as 0.
func Append(b *exposition.Batch, ns string, standard bool, st Stats) {
	if v, ok := st["version"]; ok {
		b.Family(ns+"_version", "The version of this memcached server.", exposition.Gauge)
		b.Sample(ns+"_version", 1, exposition.Label{Name: "version", Value: v})
	}
	for _, m := range metrics {
		v, ok := number(st[m.key])
		if !ok {
			continue
		}
		typ := m.typ
		if standard && m.key == "uptime" {
			typ = exposition.Gauge
		}
		b.Add(ns+m.name, m.help, typ, v)
	}
	started := false
	for _, c := range commands {
		v, ok := number(st[c.key])
		if !ok {
			continue
		}
		if !started {
			b.Family(ns+"_commands_total", "Total number of all requests broken down by command (get, set, etc.) and status.", exposition.Counter)
			started = true
		}
		b.Sample(ns+"_commands_total", v, exposition.Label{Name: "command", Value: c.command}, exposition.Label{Name: "status", Value: c.status})
	}
}

func number(s string) (float64, bool) {
	if s == "" {
		return 0, false
	}
	// rusage values are "seconds.microseconds"; ParseFloat reads them as is.
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}
