// Package redisinfo reads Redis's INFO and exposes its core fields under
// redis_exporter's metric names.
package redisinfo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/podkit/podkit/internal/adapter/exposition"
	"github.com/podkit/podkit/internal/adapter/fetch"
)

// ErrProtocol is wrapped by every malformed answer.
var ErrProtocol = errors.New("unexpected redis answer")

// Source reads INFO from a Redis server.
type Source struct {
	addr, password, ns string
}

// New returns a source for addr (host:port); password may be empty;
// namespace is normally "redis".
func New(addr, password, namespace string) *Source {
	return &Source{addr: addr, password: password, ns: namespace}
}

type field struct {
	key, name, help string
	typ             exposition.Type
}

var fields = []field{
	{"uptime_in_seconds", "_uptime_in_seconds", "Seconds since the Redis server started.", exposition.Gauge},
	{"connected_clients", "_connected_clients", "Number of client connections (excluding replicas).", exposition.Gauge},
	{"blocked_clients", "_blocked_clients", "Number of clients pending on a blocking call.", exposition.Gauge},
	{"connected_slaves", "_connected_slaves", "Number of connected replicas.", exposition.Gauge},
	{"used_memory", "_memory_used_bytes", "Bytes allocated by Redis (INFO used_memory).", exposition.Gauge},
	{"used_memory_rss", "_memory_used_rss_bytes", "Resident set size of the Redis process in bytes (INFO used_memory_rss).", exposition.Gauge},
	{"maxmemory", "_memory_max_bytes", "The maxmemory setting in bytes (0: no limit).", exposition.Gauge},
	{"total_connections_received", "_connections_received_total", "Connections accepted by the server.", exposition.Counter},
	{"total_commands_processed", "_commands_processed_total", "Commands processed by the server.", exposition.Counter},
	{"rejected_connections", "_rejected_connections_total", "Connections rejected because of the maxclients limit.", exposition.Counter},
	{"total_net_input_bytes", "_net_input_bytes_total", "Bytes read from the network.", exposition.Counter},
	{"total_net_output_bytes", "_net_output_bytes_total", "Bytes written to the network.", exposition.Counter},
	{"expired_keys", "_expired_keys_total", "Key expiration events.", exposition.Counter},
	{"evicted_keys", "_evicted_keys_total", "Keys evicted because of the maxmemory limit.", exposition.Counter},
	{"keyspace_hits", "_keyspace_hits_total", "Successful lookups of keys in the main dictionary.", exposition.Counter},
	{"keyspace_misses", "_keyspace_misses_total", "Failed lookups of keys in the main dictionary.", exposition.Counter},
}

// Names lists the families the source produces.
func (s *Source) Names() []string {
	names := []string{s.ns + "_db_keys", s.ns + "_db_keys_expiring", s.ns + "_commands_total", s.ns + "_commands_duration_seconds_total"}
	for _, f := range fields {
		names = append(names, s.ns+f.name)
	}
	return names
}

// Scrape runs INFO ALL on a fresh connection.
func (s *Source) Scrape(ctx context.Context, b *exposition.Batch) error {
	conn, stop, err := fetch.Dial(ctx, s.addr)
	if err != nil {
		return err
	}
	defer stop()
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 16<<10)
	if s.password != "" {
		if _, err := fmt.Fprintf(conn, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(s.password), s.password); err != nil {
			return fmt.Errorf("redis %s: %w", s.addr, err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("redis %s: auth: %w", s.addr, err)
		}
		if !strings.HasPrefix(line, "+OK") {
			return fmt.Errorf("redis %s: auth: %s", s.addr, strings.TrimSpace(line))
		}
	}
	if _, err := conn.Write([]byte("*2\r\n$4\r\nINFO\r\n$3\r\nALL\r\n")); err != nil {
		return fmt.Errorf("redis %s: %w", s.addr, err)
	}
	body, err := ReadBulk(r, 4<<20)
	if err != nil {
		return fmt.Errorf("redis %s: INFO: %w", s.addr, err)
	}
	return Append(b, s.ns, body)
}

// ReadBulk reads one RESP bulk string of at most max bytes.
func ReadBulk(r *bufio.Reader, max int) ([]byte, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "-") {
		return nil, fmt.Errorf("server error: %s", line[1:])
	}
	if !strings.HasPrefix(line, "$") {
		return nil, fmt.Errorf("%w: %q", ErrProtocol, line)
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 || n > max {
		return nil, fmt.Errorf("%w: bulk length %q", ErrProtocol, line[1:])
	}
	body := make([]byte, n+2)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return body[:n], nil
}

// Append parses an INFO body and adds its metrics to b.
func Append(b *exposition.Batch, ns string, info []byte) error {
	kv := make(map[string]string, 256)
	type db struct{ name, keys, expires string }
	var dbs []db
	type cmd struct{ name, calls, usec string }
	var cmds []cmd
	section := ""
	for line := range strings.SplitSeq(string(info), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			continue
		}
		if h, ok := strings.CutPrefix(line, "# "); ok {
			section = strings.ToLower(h)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("%w: INFO line %q", ErrProtocol, trunc(line))
		}
		switch {
		case section == "keyspace" && strings.HasPrefix(k, "db"):
			d := db{name: k}
			for p := range strings.SplitSeq(v, ",") {
				pk, pv, _ := strings.Cut(p, "=")
				switch pk {
				case "keys":
					d.keys = pv
				case "expires":
					d.expires = pv
				}
			}
			dbs = append(dbs, d)
		case section == "commandstats" && strings.HasPrefix(k, "cmdstat_"):
			c := cmd{name: strings.TrimPrefix(k, "cmdstat_")}
			for p := range strings.SplitSeq(v, ",") {
				pk, pv, _ := strings.Cut(p, "=")
				switch pk {
				case "calls":
					c.calls = pv
				case "usec":
					c.usec = pv
				}
			}
			cmds = append(cmds, c)
		default:
			kv[k] = v
		}
	}
	if _, ok := kv["redis_version"]; !ok {
		return fmt.Errorf("%w: INFO has no redis_version", ErrProtocol)
	}
	for _, f := range fields {
		v, err := strconv.ParseFloat(kv[f.key], 64)
		if err != nil {
			continue
		}
		b.Add(ns+f.name, f.help, f.typ, v)
	}
	if len(dbs) > 0 {
		b.Family(ns+"_db_keys", "Keys in each database.", exposition.Gauge)
		for _, d := range dbs {
			if v, err := strconv.ParseFloat(d.keys, 64); err == nil {
				b.Sample(ns+"_db_keys", v, exposition.Label{Name: "db", Value: d.name})
			}
		}
		b.Family(ns+"_db_keys_expiring", "Keys with an expiration in each database.", exposition.Gauge)
		for _, d := range dbs {
			if v, err := strconv.ParseFloat(d.expires, 64); err == nil {
				b.Sample(ns+"_db_keys_expiring", v, exposition.Label{Name: "db", Value: d.name})
			}
		}
	}
	if len(cmds) > 0 {
		b.Family(ns+"_commands_total", "Calls of each command.", exposition.Counter)
		for _, c := range cmds {
			if v, err := strconv.ParseFloat(c.calls, 64); err == nil {
				b.Sample(ns+"_commands_total", v, exposition.Label{Name: "cmd", Value: c.name})
			}
		}
		b.Family(ns+"_commands_duration_seconds_total", "Time spent in each command, in seconds.", exposition.Counter)
		for _, c := range cmds {
			if v, err := strconv.ParseFloat(c.usec, 64); err == nil {
				b.Sample(ns+"_commands_duration_seconds_total", v/1e6, exposition.Label{Name: "cmd", Value: c.name})
			}
		}
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}
