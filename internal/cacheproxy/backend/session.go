package backend

import (
	"bufio"
	"net"
	"time"
)

// Pending is a client request whose reply is on its way.
type Pending interface {
	// WriteReply waits for the request's calls, writes its reply to w (a
	// failed w swallows it) and releases the calls.
	WriteReply(w *bufio.Writer)
}

// NextFunc reads one request from the client and sends it on. It returns
// the pending reply (nil for none), whether the client quit, and an error
// that ends the connection (after the replies read so far are written).
type NextFunc func(b *Batch) (p Pending, quit bool, err error)

// clientWriteTimeout drops a client that stops reading its replies; reads
// have no deadline, as an idle client may keep its connection.
const clientWriteTimeout = 60 * time.Second

// ClientLimits bound what one client connection holds at a time.
type ClientLimits struct {
	Depth int   // requests read before their replies are written
	Bytes int64 // request bytes read before the replies are written
}

// countingReader counts the bytes read from a connection.
type countingReader struct {
	r net.Conn
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ServeClient runs one client connection: it reads every request the
// client has already sent (within limits), sends each to its server at
// once, then writes the replies in request order and flushes once. A
// pipelining client so gets one read, one batch per server and one write
// per batch, and one goroutine does it all. When done closes, the requests
// already read are answered and the connection closes. start receives the
// connection's reader and returns the protocol's request reader.
func ServeClient(nc net.Conn, limits ClientLimits, done <-chan struct{}, start func(br *bufio.Reader) NextFunc) {
	cr := &countingReader{r: nc}
	br := bufio.NewReaderSize(cr, 64<<10)
	bw := bufio.NewWriterSize(nc, 64<<10)
	next := start(br)
	stop := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-done:
			// Wake a blocked read; what was read still gets its reply.
			if cr, ok := nc.(interface{ CloseRead() error }); ok {
				_ = cr.CloseRead()
			} else {
				nc.Close()
			}
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		<-exited
		nc.Close()
	}()
	batch := make([]Pending, 0, 16)
	var out Batch
	var batchStart int64
	for {
		p, quit, err := next(&out)
		if p != nil {
			batch = append(batch, p)
		}
		end := err != nil || quit
		if end || br.Buffered() == 0 || len(batch) >= limits.Depth || cr.n-batchStart >= limits.Bytes {
			batchStart = cr.n
			out.Flush()
			out.Wait()
			for i, p := range batch {
				p.WriteReply(bw)
				batch[i] = nil
			}
			batch = batch[:0]
			_ = nc.SetWriteDeadline(time.Now().Add(clientWriteTimeout))
			if bw.Flush() != nil || end {
				return
			}
		}
	}
}
