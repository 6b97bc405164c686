// Package stubstatus reads nginx's stub_status page and exposes it under
// nginx-prometheus-exporter's metric names, or under names that pass
// promtool's lint.
package stubstatus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/podkit/podkit/internal/adapter/exposition"
	"github.com/podkit/podkit/internal/adapter/fetch"
)

// Status is one stub_status reading.
type Status struct {
	Active, Accepts, Handled, Requests, Reading, Writing, Waiting uint64
}

// ErrFormat is wrapped by every parse error.
var ErrFormat = errors.New("not an nginx stub_status page")

// The words between the numbers, in order; a number sits at each "".
var template = [...]string{
	"Active", "connections:", "",
	"server", "accepts", "handled", "requests", "", "", "",
	"Reading:", "", "Writing:", "", "Waiting:", "",
}

// Parse reads a stub_status body.
func Parse(body []byte) (Status, error) {
	var st Status
	nums := [7]*uint64{&st.Active, &st.Accepts, &st.Handled, &st.Requests, &st.Reading, &st.Writing, &st.Waiting}
	n, i := 0, 0
	for _, want := range template {
		for i < len(body) && isSpace(body[i]) {
			i++
		}
		j := i
		for j < len(body) && !isSpace(body[j]) {
			j++
		}
		if i == j {
			return Status{}, fmt.Errorf("%w: ends before %q", ErrFormat, orNumber(want))
		}
		tok := body[i:j]
		i = j
		if want != "" {
			if string(tok) != want {
				return Status{}, fmt.Errorf("%w: found %q where %q belongs", ErrFormat, trunc(tok), want)
			}
			continue
		}
		v, err := strconv.ParseUint(string(tok), 10, 64)
		if err != nil {
			return Status{}, fmt.Errorf("%w: %q is not a count", ErrFormat, trunc(tok))
		}
		*nums[n] = v
		n++
	}
	for ; i < len(body); i++ {
		if !isSpace(body[i]) {
			return Status{}, fmt.Errorf("%w: unexpected %q after Waiting", ErrFormat, trunc(body[i:]))
		}
	}
	return st, nil
}

func orNumber(s string) string {
	if s == "" {
		return "a number"
	}
	return s
}

func trunc(b []byte) string {
	if len(b) > 32 {
		b = b[:32]
	}
	return string(b)
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

// Naming selects metric names.
type Naming int

// Namings.
const (
	// Compat is nginx-prometheus-exporter's names, types and help, so its
	// dashboards and alerts keep working.
	Compat Naming = iota
	// Standard adds _total to the two counters that lack it, so the output
	// passes promtool check metrics and stays typed under OpenMetrics.
	Standard
)

// Source reads stub_status from a URL.
type Source struct {
	url    string
	client *fetch.Client
	names  [7]string
	pool   sync.Pool
}

// New returns a source for url; namespace is normally "nginx".
func New(url string, client *fetch.Client, namespace string, naming Naming) *Source {
	s := &Source{url: url, client: client}
	s.pool.New = func() any { return new(bytes.Buffer) }
	acc, hnd := "_connections_accepted", "_connections_handled"
	if naming == Standard {
		acc, hnd = acc+"_total", hnd+"_total"
	}
	for i, n := range [7]string{"_connections_active", acc, hnd, "_http_requests_total",
		"_connections_reading", "_connections_writing", "_connections_waiting"} {
		s.names[i] = namespace + n
	}
	return s
}

// UpHelp is nginx-prometheus-exporter's HELP for nginx_up.
func (s *Source) UpHelp() string { return "Status of the last metric scrape" }

// Names lists the families the source produces.
func (s *Source) Names() []string { return s.names[:] }

// Scrape fetches and parses stub_status.
func (s *Source) Scrape(ctx context.Context, b *exposition.Batch) error {
	buf := s.pool.Get().(*bytes.Buffer)
	defer s.pool.Put(buf)
	if err := s.client.Get(ctx, s.url, nil, buf, 64<<10); err != nil {
		return err
	}
	st, err := Parse(buf.Bytes())
	if err != nil {
		return fmt.Errorf("%s: %w", s.url, err)
	}
	Append(b, s.names, st)
	return nil
}

// Append adds st to b under names (in Names order), sorted by name as
// nginx-prometheus-exporter's output is.
func Append(b *exposition.Batch, names [7]string, st Status) {
	b.Add(names[1], "Accepted client connections", exposition.Counter, float64(st.Accepts))
	b.Add(names[0], "Active client connections", exposition.Gauge, float64(st.Active))
	b.Add(names[2], "Handled client connections", exposition.Counter, float64(st.Handled))
	b.Add(names[4], "Connections where NGINX is reading the request header", exposition.Gauge, float64(st.Reading))
	b.Add(names[6], "Idle client connections", exposition.Gauge, float64(st.Waiting))
	b.Add(names[5], "Connections where NGINX is writing the response back to the client", exposition.Gauge, float64(st.Writing))
	b.Add(names[3], "Total http requests", exposition.Counter, float64(st.Requests))
}
