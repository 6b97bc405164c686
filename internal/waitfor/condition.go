// Package waitfor checks readiness conditions (a TCP port accepts, an HTTP
// endpoint answers with an accepted status, a DNS name resolves) and waits,
// with exponential backoff and jitter, until all of them hold.
package waitfor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Condition is one thing to wait for. Check makes one attempt and returns
// nil when the condition holds; it must honour ctx's deadline.
type Condition interface {
	String() string
	Check(ctx context.Context) error
}

// Parse reads a condition URL:
//
//	tcp://host:port                      a TCP connection to host:port succeeds
//	http://host[:port]/path[#status=LO-HI] a GET answers with a status in LO..HI (default 200-299)
//	https://...                          the same over TLS (system roots)
//	dns://name                           name resolves to at least one address
func Parse(raw string) (Condition, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("condition %q: %v", raw, err)
	}
	switch u.Scheme {
	case "tcp":
		return parseTCP(raw, u)
	case "http", "https":
		return parseHTTP(raw, u)
	case "dns":
		return parseDNS(raw, u)
	case "":
		return nil, fmt.Errorf("condition %q has no scheme: write tcp://host:port, http://host/path or dns://name", raw)
	default:
		return nil, fmt.Errorf("condition %q: unknown scheme %q: use tcp, http, https or dns", raw, u.Scheme)
	}
}

func parseTCP(raw string, u *url.URL) (Condition, error) {
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("condition %q: a tcp condition is only tcp://host:port", raw)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("condition %q: want tcp://host:port", raw)
	}
	if _, err := strconv.ParseUint(u.Port(), 10, 16); err != nil {
		return nil, fmt.Errorf("condition %q: port %q is not a number from 0 to 65535", raw, u.Port())
	}
	return &tcpCondition{raw: raw, addr: u.Host}, nil
}

func parseHTTP(raw string, u *url.URL) (Condition, error) {
	if u.Host == "" {
		return nil, fmt.Errorf("condition %q: want %s://host[:port]/path", raw, u.Scheme)
	}
	lo, hi := 200, 299
	if u.Fragment != "" {
		v, ok := strings.CutPrefix(u.Fragment, "status=")
		if !ok {
			return nil, fmt.Errorf("condition %q: the only fragment understood is #status=LO-HI (e.g. #status=200-399)", raw)
		}
		var err error
		if lo, hi, err = parseStatusRange(v); err != nil {
			return nil, fmt.Errorf("condition %q: %v", raw, err)
		}
	}
	target := *u
	target.Fragment, target.RawFragment = "", ""
	return &httpCondition{raw: raw, url: target.String(), lo: lo, hi: hi}, nil
}

func parseStatusRange(v string) (lo, hi int, err error) {
	los, his, isRange := strings.Cut(v, "-")
	if !isRange {
		his = los
	}
	lo, err1 := strconv.Atoi(los)
	hi, err2 := strconv.Atoi(his)
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("status %q: want a code or a range LO-HI within 100-599", v)
	}
	return lo, hi, nil
}

func parseDNS(raw string, u *url.URL) (Condition, error) {
	if u.Hostname() == "" || u.Port() != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("condition %q: want dns://name", raw)
	}
	return &dnsCondition{raw: raw, name: u.Hostname()}, nil
}

type tcpCondition struct {
	raw, addr string
}

func (c *tcpCondition) String() string { return c.raw }

func (c *tcpCondition) Check(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

type httpCondition struct {
	raw, url string
	lo, hi   int
}

func (c *httpCondition) String() string { return c.raw }

// httpClient neither follows redirects (the status asked for is the one the
// URL itself answers) nor keeps connections (each attempt must see whether
// the server accepts a new connection now), and ignores HTTP_PROXY: the
// conditions are cluster-local addresses that a proxy would not reach.
var httpClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
	},
}

// maxBody bounds what is read of a response before closing it.
const maxBody = 64 << 10

func (c *httpCondition) Check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "podkit-waitfor")
	resp, err := httpClient.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			// url.Error repeats the method and URL the log line already names.
			return uerr.Err
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if resp.StatusCode < c.lo || resp.StatusCode > c.hi {
		return fmt.Errorf("status %d, want %d-%d", resp.StatusCode, c.lo, c.hi)
	}
	return nil
}

type dnsCondition struct {
	raw, name string
}

func (c *dnsCondition) String() string { return c.raw }

func (c *dnsCondition) Check(ctx context.Context) error {
	addrs, err := net.DefaultResolver.LookupHost(ctx, c.name)
	if err != nil {
		return err
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%s resolves to no address", c.name)
	}
	return nil
}
