package memcache

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"net"
	"sync"

	"github.com/podkit/podkit/internal/cacheproxy/backend"
)

// Commands is the command table, for per-command metrics.
var Commands = []string{"get", "gets", "gat", "gats", "set", "add", "replace", "append", "prepend", "cas",
	"delete", "incr", "decr", "touch", "version", "quit", "mg", "ms", "md", "ma", "mn", "me", "verbosity"}

const (
	maxKey   = 250
	maxLine  = 8 << 20 // a multi-get of tens of thousands of keys
	maxDepth = 1024    // requests a client may have in flight
)

// Handler serves memcache clients of one pool.
type Handler struct {
	Pool     *backend.Pool
	Stats    *backend.PoolStats
	MaxValue int
	Version  string
}

// reply is one client request's pending reply.
type reply struct {
	local  []byte // a reply made here, when there are no calls
	calls  []*backend.Call
	multi  bool     // a split get: merge VALUE blocks in key order
	keys   [][]byte // multi: the keys in request order (into keyBuf)
	owner  []int    // multi: index in calls of each key's call
	keyBuf []byte
	silent bool   // noreply: write nothing
	quiet  []byte // meta q: reply codes to hide
	joined bool   // a get answered by part `part` of a merged multi-get
	part   int
}

var replyPool = sync.Pool{New: func() any { return new(reply) }}

func newReply() *reply { return replyPool.Get().(*reply) }

func (r *reply) release() {
	for _, c := range r.calls {
		c.Release()
	}
	clear(r.calls)
	r.calls = r.calls[:0]
	r.local = r.local[:0]
	r.keys, r.owner, r.keyBuf = r.keys[:0], r.owner[:0], r.keyBuf[:0]
	r.multi, r.silent, r.quiet, r.joined, r.part = false, false, nil, false, 0
	if cap(r.keyBuf) > 1<<16 {
		r.keyBuf, r.keys, r.owner = nil, nil, nil
	}
	replyPool.Put(r)
}

// WriteReply implements backend.Pending.
func (r *reply) WriteReply(w *bufio.Writer) {
	defer r.release()
	for _, c := range r.calls {
		c.Wait()
	}
	switch {
	case r.silent:
	case len(r.calls) == 0:
		w.Write(r.local)
	case r.joined:
		c := r.calls[0]
		switch {
		case c.Err != nil:
			writeServerError(w, c.Err)
		case !bytes.HasSuffix(c.Reply, []byte("END\r\n")):
			w.Write(lastLine(c.Reply))
		default:
			if start := c.Parts[2*r.part]; start >= 0 {
				w.Write(c.Reply[start:c.Parts[2*r.part+1]])
			}
			w.WriteString("END\r\n")
		}
	case !r.multi:
		c := r.calls[0]
		if c.Err != nil {
			writeServerError(w, c.Err)
			return
		}
		if r.quiet != nil && hidden(c.Reply, r.quiet) {
			return
		}
		w.Write(c.Reply)
	default:
		r.merge(w)
	}
}

func writeServerError(w *bufio.Writer, err error) {
	w.WriteString("SERVER_ERROR ")
	w.WriteString(oneLine(err.Error()))
	w.WriteString("\r\n")
}

func oneLine(s string) string {
	if i := bytes.IndexAny([]byte(s), "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// hidden reports whether a meta reply is one the client asked (q) not to see.
func hidden(reply, codes []byte) bool {
	if len(reply) < 4 || reply[2] != '\r' && reply[2] != ' ' {
		return false
	}
	for i := 0; i+1 < len(codes); i += 2 {
		if reply[0] == codes[i] && reply[1] == codes[i+1] {
			return true
		}
	}
	return false
}

// merge writes the VALUE blocks of a split get in the order of the keys,
// then END. Any failed part fails the whole request, as in nutcracker.
func (r *reply) merge(w *bufio.Writer) {
	for _, c := range r.calls {
		if c.Err != nil {
			writeServerError(w, c.Err)
			return
		}
		if !bytes.HasSuffix(c.Reply, []byte("END\r\n")) {
			w.Write(lastLine(c.Reply))
			return
		}
	}
	var cursors [16]int
	cur := cursors[:0]
	if len(r.calls) > len(cursors) {
		cur = make([]int, len(r.calls))
	} else {
		cur = cur[:len(r.calls)]
	}
	for i, k := range r.keys {
		ci := r.owner[i]
		b := r.calls[ci].Reply[cur[ci]:]
		blk, key, ok := nextValue(b)
		if ok && bytes.Equal(key, k) {
			w.Write(b[:blk])
			cur[ci] += blk
		}
	}
	w.WriteString("END\r\n")
}

// lastLine is the final line of a reply (an error line ending a get).
func lastLine(b []byte) []byte {
	if i := bytes.LastIndex(b[:max(len(b)-2, 0)], []byte("\r\n")); i >= 0 {
		return b[i+2:]
	}
	return b
}

// nextValue measures the VALUE block at the start of b.
func nextValue(b []byte) (n int, key []byte, ok bool) {
	if !bytes.HasPrefix(b, []byte("VALUE ")) {
		return 0, nil, false
	}
	eol := bytes.IndexByte(b, '\n')
	if eol < 0 {
		return 0, nil, false
	}
	line := bytes.TrimSuffix(b[:eol], []byte("\r"))
	size, ok := atoi(field(line, 3))
	if !ok || eol+1+size+2 > len(b) {
		return 0, nil, false
	}
	return eol + 1 + size + 2, field(line, 1), true
}

// ServeConn serves one client until it quits, sends garbage, or done is
// closed (then it finishes the requests it has read and returns).
func (h *Handler) ServeConn(nc net.Conn, done <-chan struct{}) {
	limits := backend.ClientLimits{Depth: maxDepth, Bytes: int64(max(h.MaxValue, 16<<20))}
	backend.ServeClient(nc, limits, done, func(br *bufio.Reader) backend.Protocol {
		s := &state{h: h, br: br}
		f := &framer{maxValue: h.MaxValue}
		return backend.Protocol{Frame: f.frame, Next: func(b *backend.Batch) (backend.Pending, bool, error) {
			s.batch = b
			r, quit, err := s.next()
			if r == nil {
				return nil, quit, err
			}
			return r, quit, err
		}}
	})
}

type state struct {
	commands backend.CommandCounter
	batch    *backend.Batch
	h        *Handler
	br       *bufio.Reader
	line     []byte
	tok      [][]byte
	ends     []int // offset in line just past each token
}

var (
	errClose   = errors.New("close connection")
	crlf       = []byte("\r\n")
	noreplyTok = []byte("noreply")
)

func localReply(s string) *reply {
	r := newReply()
	r.local = append(r.local, s...)
	return r
}

// next reads and dispatches one request. A nil error with a reply means
// the connection goes on.
func (s *state) next() (*reply, bool, error) {
	var err error
	s.line, err = appendLine(s.br, s.line[:0], maxLine)
	if err != nil {
		if errors.Is(err, backend.ErrLineTooLong) {
			s.h.Stats.ClientError("malformed")
			return localReply("CLIENT_ERROR line too long\r\n"), false, errClose
		}
		return nil, false, err
	}
	line := s.line[:len(s.line)-2]
	s.tok, s.ends = fields(s.tok[:0], s.ends[:0], line)
	if len(s.tok) == 0 {
		s.h.Stats.ClientError("malformed")
		return localReply("ERROR\r\n"), false, nil
	}
	cmd := s.tok[0]
	lowerInPlace(cmd)
	s.commands.Count(s.h.Stats, cmd)
	switch string(cmd) {
	case "get", "gets":
		return s.retrieval(1)
	case "gat", "gats":
		return s.retrieval(2)
	case "set", "add", "replace", "append", "prepend":
		return s.storage(5)
	case "cas":
		return s.storage(6)
	case "delete", "incr", "decr", "touch":
		return s.simple(cmd)
	case "ms":
		return s.meta(true)
	case "mg", "md", "ma", "me":
		return s.meta(false)
	case "mn":
		return localReply("MN\r\n"), false, nil
	case "version":
		return localReply("VERSION " + s.h.Version + "\r\n"), false, nil
	case "quit":
		return nil, true, nil
	}
	s.h.Stats.ClientError("unsupported")
	if isKnownUnsupported(cmd) {
		return localReply("SERVER_ERROR " + string(cmd) + " is not supported by the ambassador (it would reach one shard only)\r\n"), false, nil
	}
	return localReply("ERROR\r\n"), false, nil
}

func isKnownUnsupported(cmd []byte) bool {
	switch string(cmd) {
	case "flush_all", "stats", "verbosity", "cache_memlimit", "shutdown", "slabs", "lru_crawler", "watch", "lru", "misbehave":
		return true
	}
	return false
}

func (s *state) clientError(msg string) (*reply, bool, error) {
	s.h.Stats.ClientError("malformed")
	return localReply("CLIENT_ERROR " + msg + "\r\n"), false, nil
}

// route sends req (the call's Req is filled) to key's server.
func (s *state) route(key []byte, call *backend.Call) error {
	srv, h := s.h.Pool.Route(key)
	if srv == nil {
		return backend.ErrNoServer
	}
	srv.Do(call, h, s.batch)
	return nil
}

func (s *state) single(key []byte, r *reply, call *backend.Call) (*reply, bool, error) {
	if err := s.route(key, call); err != nil {
		call.Release()
		r.release()
		return localReply("SERVER_ERROR " + err.Error() + "\r\n"), false, nil
	}
	r.calls = append(r.calls, call)
	return r, false, nil
}

// retrieval handles get/gets (keys from index 1) and gat/gats (from 2).
func (s *state) retrieval(first int) (*reply, bool, error) {
	if len(s.tok) <= first {
		return localReply("ERROR\r\n"), false, nil
	}
	keys := s.tok[first:]
	for _, k := range keys {
		if len(k) > maxKey {
			return s.clientError("bad command line format")
		}
	}
	prefix := s.upTo(first - 1) // "get" or "gat <exptime>"
	r := newReply()
	if len(keys) == 1 && string(s.tok[0]) == "get" {
		srv, h := s.h.Pool.Route(keys[0])
		if srv == nil {
			r.release()
			return localReply("SERVER_ERROR " + backend.ErrNoServer.Error() + "\r\n"), false, nil
		}
		c, i := srv.Join(keys[:1], h, s.batch, getMerger{})
		r.calls = append(r.calls, c)
		r.joined, r.part = true, i
		return r, false, nil
	}
	if len(keys) == 1 {
		call := backend.NewCall()
		call.Kind = kindRetrieval
		call.Req = append(append(call.Req, s.line[:len(s.line)-2]...), crlf...)
		return s.single(keys[0], r, call)
	}
	r.multi = true
	var servers [16]*backend.Server
	var hashes [16]uint32
	srvs, hs := servers[:0], hashes[:0]
	for _, k := range keys {
		srv, h := s.h.Pool.Route(k)
		if srv == nil {
			r.release()
			return localReply("SERVER_ERROR " + backend.ErrNoServer.Error() + "\r\n"), false, nil
		}
		ci := -1
		for i, x := range srvs {
			if x == srv {
				ci = i
				break
			}
		}
		if ci < 0 {
			ci = len(srvs)
			srvs = append(srvs, srv)
			hs = append(hs, h) // the first key's hash picks the connection
			call := backend.NewCall()
			call.Kind = kindRetrieval
			call.Req = append(call.Req, prefix...)
			r.calls = append(r.calls, call)
		}
		c := r.calls[ci]
		c.Req = append(append(c.Req, ' '), k...)
		r.owner = append(r.owner, ci)
		r.keyBuf = append(r.keyBuf, k...)
	}
	off := 0
	for _, k := range keys {
		r.keys = append(r.keys, r.keyBuf[off:off+len(k):off+len(k)])
		off += len(k)
	}
	for i, c := range r.calls {
		c.Req = append(c.Req, crlf...)
		srvs[i].Do(c, hs[i], s.batch)
	}
	return r, false, nil
}

// upTo is the line up to the end of token i.
func (s *state) upTo(i int) []byte { return s.line[:s.ends[i]] }

// storage reads a storage command and its data block; n is the token count
// without noreply.
func (s *state) storage(n int) (*reply, bool, error) {
	size := blockSize(s.tok[0], s.tok)
	if size < 0 {
		return s.clientError("bad command line format")
	}
	noreply := len(s.tok) == n+1
	if size > s.h.MaxValue {
		// The framer has the value dropped unread.
		s.h.Stats.ClientError("malformed")
		return localReply("SERVER_ERROR object too large for cache\r\n"), false, nil
	}
	call := backend.NewCall()
	call.Kind = kindLine
	if noreply {
		call.Req = append(call.Req, s.upTo(n-1)...)
	} else {
		call.Req = append(call.Req, s.line[:len(s.line)-2]...)
	}
	call.Req = append(call.Req, crlf...)
	var err error
	if call.Req, err = appendBlock(s.br, call.Req, size); err != nil {
		call.Release()
		return s.badBlock(err)
	}
	r := newReply()
	r.silent = noreply
	return s.single(s.tok[1], r, call)
}

// badBlock is the answer to a data block that could not be read: an
// error reply and the end of the connection for a block without its CRLF,
// the end alone otherwise.
func (s *state) badBlock(err error) (*reply, bool, error) {
	if errors.Is(err, backend.ErrProtocol) {
		s.h.Stats.ClientError("malformed")
		return localReply("CLIENT_ERROR bad data chunk\r\n"), false, errClose
	}
	return nil, false, err
}

// simple handles one-line, one-key commands with an optional noreply.
func (s *state) simple(cmd []byte) (*reply, bool, error) {
	want := 3
	switch string(cmd) {
	case "delete":
		want = 2
	}
	noreply := len(s.tok) > 2 && bytes.Equal(s.tok[len(s.tok)-1], noreplyTok)
	nt := len(s.tok)
	if noreply {
		nt--
	}
	// "delete <key> 0" is an old form memcached still takes.
	if nt != want && !(string(cmd) == "delete" && nt == 3) {
		return s.clientError("bad command line format")
	}
	if len(s.tok[1]) > maxKey {
		return s.clientError("bad command line format")
	}
	call := backend.NewCall()
	call.Kind = kindLine
	call.Req = append(call.Req, s.upTo(nt-1)...)
	call.Req = append(call.Req, crlf...)
	r := newReply()
	r.silent = noreply
	return s.single(s.tok[1], r, call)
}

// meta handles mg/ms/md/ma/me. The q flag is removed before forwarding so
// every request has a reply to match; the reply it would hide is dropped
// here instead.
func (s *state) meta(hasData bool) (*reply, bool, error) {
	if len(s.tok) < 2 || (hasData && len(s.tok) < 3) {
		return s.clientError("bad command line format")
	}
	cmd := s.tok[0]
	key := s.tok[1]
	if len(key) > maxKey {
		return s.clientError("bad command line format")
	}
	call := backend.NewCall()
	call.Kind = kindLine
	call.Req = append(call.Req, cmd...)
	quiet, b64 := false, false
	for i, t := range s.tok[1:] {
		if i >= 1 && !(hasData && i == 1) {
			switch t[0] {
			case 'q':
				quiet = true
				continue
			case 'b':
				b64 = true
			}
		}
		call.Req = append(append(call.Req, ' '), t...)
	}
	call.Req = append(call.Req, crlf...)
	if hasData {
		size := blockSize(cmd, s.tok)
		if size < 0 {
			call.Release()
			return s.clientError("bad data chunk")
		}
		if size > s.h.MaxValue {
			// The framer has the value dropped unread.
			call.Release()
			return localReply("SERVER_ERROR object too large for cache\r\n"), false, nil
		}
		var err error
		if call.Req, err = appendBlock(s.br, call.Req, size); err != nil {
			call.Release()
			return s.badBlock(err)
		}
	}
	if b64 {
		// Place the decoded key as a plain get of it would be placed.
		dec := make([]byte, base64.StdEncoding.DecodedLen(len(key)))
		n, err := base64.StdEncoding.Decode(dec, key)
		if err != nil {
			call.Release()
			return s.clientError("bad data chunk")
		}
		key = dec[:n]
	}
	r := newReply()
	if quiet {
		switch string(cmd) {
		case "mg":
			r.quiet = []byte("EN")
		case "ms":
			r.quiet = []byte("HD")
		case "md":
			r.quiet = []byte("HDNF")
		case "ma":
			r.quiet = []byte("HD")
		}
	}
	return s.single(key, r, call)
}

func fields(dst [][]byte, ends []int, line []byte) ([][]byte, []int) {
	i := 0
	for i < len(line) {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		j := i
		for j < len(line) && line[j] != ' ' {
			j++
		}
		if j > i {
			dst = append(dst, line[i:j:j])
			ends = append(ends, j)
		}
		i = j
	}
	return dst, ends
}

func lowerInPlace(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
}

// getMerger merges single-key gets for one server into a multi-get.
type getMerger struct{}

func (getMerger) Begin(c *backend.Call) {
	c.Kind = kindRetrieval
	c.Req = append(c.Req, "get"...)
}

func (getMerger) Add(c *backend.Call, key []byte) {
	c.Req = append(append(c.Req, ' '), key...)
}

func (getMerger) End(c *backend.Call, _ int) { c.Req = append(c.Req, crlf...) }

// Split finds each key's VALUE block: memcached answers the keys of a
// multi-get in their order and leaves the misses out.
func (getMerger) Split(c *backend.Call) {
	line := c.Req[len("get ") : len(c.Req)-2]
	off := 0
	for len(line) > 0 {
		key := line
		if i := bytes.IndexByte(line, ' '); i >= 0 {
			key, line = line[:i], line[i+1:]
		} else {
			line = nil
		}
		blk, k, ok := nextValue(c.Reply[off:])
		if ok && bytes.Equal(k, key) {
			c.Parts = append(c.Parts, off, off+blk)
			off += blk
		} else {
			c.Parts = append(c.Parts, -1, -1)
		}
	}
}
