// Package fetch is how the adapter reaches its sources: the HTTP client its
// HTTP sources share (one keep-alive pool, bounded bodies read into reused
// buffers) and deadline-bound TCP connections for memcached and Redis.
package fetch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Client GETs source endpoints.
type Client struct {
	hc        *http.Client
	userAgent string
}

// New returns a client whose requests carry userAgent. Deadlines come from
// each request's context.
func New(userAgent string) *Client {
	tr := &http.Transport{
		Proxy:                 nil, // sources live in the pod: never through a proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    false,
	}
	return &Client{hc: &http.Client{Transport: tr}, userAgent: userAgent}
}

// StatusError is a non-2xx answer.
type StatusError struct {
	URL  string
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("GET %s: HTTP %d", e.URL, e.Code)
}

// Get reads the body of url into buf (reset first), up to max bytes; a
// larger body is an error rather than a truncated parse. headers may be nil.
func (c *Client) Get(ctx context.Context, url string, headers http.Header, buf *bytes.Buffer, max int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	for k, v := range headers {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return &StatusError{URL: url, Code: resp.StatusCode}
	}
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return fmt.Errorf("GET %s: read body: %w", url, err)
	}
	if n > max {
		return fmt.Errorf("GET %s: body larger than %d bytes", url, max)
	}
	return nil
}

// Dial connects to a TCP source (memcached, Redis) for one scrape. The
// connection's deadline is ctx's, 10 s without one, and cancelling ctx
// unblocks it at once. The caller closes conn, then calls stop.
func Dial(ctx context.Context, addr string) (conn net.Conn, stop func() bool, err error) {
	var d net.Dialer
	conn, err = d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	return conn, context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) }), nil
}
