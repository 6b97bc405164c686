package redis

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/podkit/podkit/internal/cacheproxy/backend"
)

// Command classes.
const (
	single   = iota + 1 // the key is the first argument
	multiGet            // MGET: array merged in key order
	multiSum            // DEL, UNLINK, EXISTS, TOUCH: integers summed
	multiSet            // MSET: key/value pairs, +OK when all are
	script              // EVAL/EVALSHA: the first key after numkeys
	local               // answered here
)

var table = map[string]int{
	"mget": multiGet, "del": multiSum, "unlink": multiSum, "exists": multiSum, "touch": multiSum, "mset": multiSet,
	"eval": script, "evalsha": script, "eval_ro": script, "evalsha_ro": script,
	"ping": local, "echo": local, "quit": local, "auth": local, "select": local,
}

func init() {
	for _, c := range []string{
		// strings and bits
		"get", "set", "setnx", "setex", "psetex", "append", "strlen", "incr", "decr", "incrby", "decrby",
		"incrbyfloat", "getset", "getrange", "setrange", "substr", "getex", "getdel", "bitcount", "bitpos",
		"getbit", "setbit", "bitfield", "bitfield_ro",
		// keys
		"expire", "expireat", "pexpire", "pexpireat", "persist", "ttl", "pttl", "type", "dump", "restore",
		"sort", "sort_ro", "expiretime", "pexpiretime",
		// hashes
		"hdel", "hexists", "hget", "hgetall", "hincrby", "hincrbyfloat", "hkeys", "hlen", "hmget", "hmset",
		"hset", "hsetnx", "hvals", "hscan", "hstrlen", "hrandfield",
		// lists (rpoplpush and lmove go by their first key, as in nutcracker)
		"lindex", "linsert", "llen", "lpop", "lpos", "lpush", "lpushx", "lrange", "lrem", "lset", "ltrim",
		"rpop", "rpush", "rpushx", "rpoplpush", "lmove",
		// sets
		"sadd", "scard", "sismember", "smismember", "smembers", "spop", "srandmember", "srem", "sscan",
		"sdiff", "sdiffstore", "sinter", "sinterstore", "sunion", "sunionstore", "smove",
		// sorted sets
		"zadd", "zcard", "zcount", "zincrby", "zlexcount", "zrange", "zrangebylex", "zrangebyscore", "zrank",
		"zrem", "zremrangebylex", "zremrangebyrank", "zremrangebyscore", "zrevrange", "zrevrangebylex",
		"zrevrangebyscore", "zrevrank", "zscore", "zscan", "zmscore", "zpopmin", "zpopmax", "zrandmember",
		"zrangestore", "zinterstore", "zunionstore", "zdiffstore",
		// hyperloglog, geo, streams
		"pfadd", "pfcount", "pfmerge", "geoadd", "geodist", "geohash", "geopos", "georadius",
		"georadiusbymember", "georadius_ro", "georadiusbymember_ro", "geosearch", "geosearchstore",
		"xadd", "xlen", "xrange", "xrevrange", "xtrim", "xdel",
	} {
		table[c] = single
	}
}

// CommandNames is the command table, for per-command metrics.
func CommandNames() []string {
	n := make([]string, 0, len(table))
	for c := range table {
		n = append(n, c)
	}
	return n
}

// Handler serves redis clients of one pool.
type Handler struct {
	Pool     *backend.Pool
	Stats    *backend.PoolStats
	MaxValue int
	auth     atomic.Pointer[string]
}

// SetAuth sets the password clients must give (redis_auth); "" for none.
func (h *Handler) SetAuth(pw string) { h.auth.Store(&pw) }

func (h *Handler) password() string {
	if p := h.auth.Load(); p != nil {
		return *p
	}
	return h.Pool.Config().RedisAuth
}

type reply struct {
	local []byte
	calls []*backend.Call
	class int
	owner []int // index in calls of each key's call
	// joined: an MGET whose key k is part parts[k] of the merged call
	// calls[owner[k]] (see mgetMerger)
	joined bool
	parts  []int
}

var replyPool = sync.Pool{New: func() any { return new(reply) }}

func newReply() *reply { return replyPool.Get().(*reply) }

func (r *reply) release() {
	for _, c := range r.calls {
		c.Release()
	}
	clear(r.calls)
	r.calls, r.local, r.owner, r.class = r.calls[:0], r.local[:0], r.owner[:0], 0
	r.joined, r.parts = false, r.parts[:0]
	if cap(r.owner) > 1<<14 || cap(r.parts) > 1<<14 {
		r.owner, r.parts = nil, nil
	}
	replyPool.Put(r)
}

func localReply(s string) *reply {
	r := newReply()
	r.local = append(r.local, s...)
	return r
}

func errReply(msg string) *reply { return localReply("-ERR " + msg + "\r\n") }

func writeErr(w *bufio.Writer, err error) {
	w.WriteString("-ERR ")
	msg := err.Error()
	if i := bytes.IndexAny([]byte(msg), "\r\n"); i >= 0 {
		msg = msg[:i]
	}
	w.WriteString(msg)
	w.WriteString("\r\n")
}

// WriteReply implements backend.Pending.
func (r *reply) WriteReply(w *bufio.Writer) {
	defer r.release()
	for _, c := range r.calls {
		c.Wait()
	}
	if len(r.calls) == 0 {
		w.Write(r.local)
		return
	}
	// Any failed part fails the whole command, as in nutcracker.
	for _, c := range r.calls {
		if c.Err != nil {
			writeErr(w, c.Err)
			return
		}
	}
	if len(r.calls) == 1 && !r.joined {
		w.Write(r.calls[0].Reply)
		return
	}
	for _, c := range r.calls {
		if len(c.Reply) > 0 && c.Reply[0] == '-' {
			w.Write(c.Reply)
			return
		}
	}
	if r.joined {
		r.writeParts(w)
		return
	}
	switch r.class {
	case multiSum:
		var sum int64
		for _, c := range r.calls {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(c.Reply[1:])), 10, 64)
			if c.Reply[0] != ':' || err != nil {
				writeErr(w, errors.New("unexpected reply from server"))
				return
			}
			sum += n
		}
		w.WriteByte(':')
		// Formatted in the writer's own free space: no allocation.
		w.Write(strconv.AppendInt(w.AvailableBuffer(), sum, 10))
		w.WriteString("\r\n")
	default: // multiSet
		w.WriteString("+OK\r\n")
	}
}

// writeParts writes an MGET's values from the merged calls that held its
// keys.
func (r *reply) writeParts(w *bufio.Writer) {
	for k, p := range r.parts {
		if c := r.calls[r.owner[k]]; 2*p+1 >= len(c.Parts) || c.Parts[2*p] < 0 {
			writeErr(w, errors.New("unexpected reply from server"))
			return
		}
	}
	w.WriteByte('*')
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(len(r.parts)), 10))
	w.WriteString("\r\n")
	for k, p := range r.parts {
		c := r.calls[r.owner[k]]
		w.Write(c.Reply[c.Parts[2*p]:c.Parts[2*p+1]])
	}
}

// ServeConn serves one client until it quits, breaks the protocol, or done
// is closed (then it answers what it has read and returns).
func (h *Handler) ServeConn(nc net.Conn, done <-chan struct{}) {
	limits := backend.ClientLimits{Depth: maxPipeline, Bytes: int64(max(h.MaxValue, 16<<20))}
	backend.ServeClient(nc, limits, done, func(br *bufio.Reader) backend.Protocol {
		s := &state{h: h, br: br, authed: h.password() == ""}
		f := &framer{maxValue: h.MaxValue}
		refuse := func(err error) []byte {
			h.Stats.ClientError("malformed")
			return []byte("-ERR " + err.Error() + " (the ambassador takes at most " + strconv.Itoa(maxRequest(h.MaxValue)) + " bytes in one request)\r\n")
		}
		return backend.Protocol{Frame: f.frame, Refuse: refuse, Next: func(b *backend.Batch) (backend.Pending, bool, error) {
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
	srvs     []*backend.Server // mget: each key's server, reused
	hashes   []uint32
	group    [][]byte
	h        *Handler
	br       *bufio.Reader
	raw      []byte // the request as RESP
	args     [][]byte
	offs     []int // argument offsets in raw, reused
	authed   bool
}

var errClose = errors.New("protocol error")

// readRequest reads one request into s.raw and s.args.
func (s *state) readRequest() error {
	s.raw, s.args = s.raw[:0], s.args[:0]
	if cap(s.raw) > 1<<20 {
		s.raw = nil
	}
	var err error
	s.raw, err = appendLine(s.br, s.raw)
	if err != nil {
		return err
	}
	line := s.raw[:len(s.raw)-2]
	if len(line) == 0 || line[0] != '*' {
		return s.inline(line)
	}
	n, err := parseInt(line[1:])
	if err != nil || n > maxArgs {
		return fmt.Errorf("%w: invalid multibulk length", errClose)
	}
	offs := s.offs[:0]
	defer func() {
		if cap(offs) <= 1<<12 {
			s.offs = offs[:0]
		}
	}()
	for range n {
		at := len(s.raw)
		if s.raw, err = appendLine(s.br, s.raw); err != nil {
			return err
		}
		hdr := s.raw[at : len(s.raw)-2]
		if len(hdr) == 0 || hdr[0] != '$' {
			return fmt.Errorf("%w: expected '$', got '%c'", errClose, firstByte(hdr))
		}
		l, err := parseInt(hdr[1:])
		if err != nil || l < 0 || l > s.h.MaxValue {
			return fmt.Errorf("%w: invalid bulk length", errClose)
		}
		at = len(s.raw)
		s.raw = backend.Grow(s.raw, l+2)
		if _, err := io.ReadFull(s.br, s.raw[at:]); err != nil {
			return err
		}
		if s.raw[len(s.raw)-2] != '\r' || s.raw[len(s.raw)-1] != '\n' {
			return fmt.Errorf("%w: bulk without CRLF", errClose)
		}
		offs = append(offs, at, l)
	}
	// Slices taken once raw stops growing.
	for i := 0; i < len(offs); i += 2 {
		s.args = append(s.args, s.raw[offs[i]:offs[i]+offs[i+1]])
	}
	return nil
}

func firstByte(b []byte) byte {
	if len(b) == 0 {
		return ' '
	}
	return b[0]
}

// inline turns an inline command ("GET k") into RESP.
func (s *state) inline(line []byte) error {
	f := bytes.Fields(line)
	var b []byte
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(f)), 10)
	b = append(b, '\r', '\n')
	offs := make([]int, 0, len(f))
	for _, a := range f {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		offs = append(offs, len(b))
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	s.raw = append(s.raw[:0], b...)
	for i, a := range f {
		s.args = append(s.args, s.raw[offs[i]:offs[i]+len(a)])
	}
	return nil
}

func (s *state) next() (*reply, bool, error) {
	if err := s.readRequest(); err != nil {
		if errors.Is(err, errClose) {
			s.h.Stats.ClientError("malformed")
			return errReply("Protocol error: " + trimProto(err)), false, err
		}
		return nil, false, err
	}
	if len(s.args) == 0 {
		return nil, false, nil // an empty line or *0: nothing to answer
	}
	name := s.args[0]
	lower(name)
	s.commands.Count(s.h.Stats, name)
	class := table[string(name)]
	if !s.authed && !(class == local && string(name) == "auth") && string(name) != "quit" {
		s.h.Stats.ClientError("auth")
		return localReply("-NOAUTH Authentication required.\r\n"), false, nil
	}
	switch class {
	case 0:
		s.h.Stats.ClientError("unsupported")
		return errReply(fmt.Sprintf("unsupported command '%s': the ambassador shards keys over servers and cannot proxy it", printable(name))), false, nil
	case local:
		return s.local(name)
	case single:
		if len(s.args) < 2 {
			return wrongArgs(name), false, nil
		}
		return s.forward(s.args[1], class), false, nil
	case script:
		if len(s.args) < 3 {
			return wrongArgs(name), false, nil
		}
		nk, err := parseInt(s.args[2])
		if err != nil || nk < 1 || len(s.args) < 3+nk {
			return errReply(fmt.Sprintf("%s needs at least one key to be routed", name)), false, nil
		}
		return s.forward(s.args[3], class), false, nil
	default:
		return s.multi(name, class), false, nil
	}
}

func trimProto(err error) string {
	msg := err.Error()
	if i := bytes.Index([]byte(msg), []byte(": ")); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

func printable(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return strconv.Quote(string(b))[1 : len(strconv.Quote(string(b)))-1]
}

func wrongArgs(name []byte) *reply {
	return errReply(fmt.Sprintf("wrong number of arguments for '%s' command", name))
}

func (s *state) local(name []byte) (*reply, bool, error) {
	switch string(name) {
	case "ping":
		if len(s.args) == 2 {
			return localReply(string(appendBulk(nil, s.args[1]))), false, nil
		}
		return localReply("+PONG\r\n"), false, nil
	case "echo":
		if len(s.args) != 2 {
			return wrongArgs(name), false, nil
		}
		return localReply(string(appendBulk(nil, s.args[1]))), false, nil
	case "quit":
		return localReply("+OK\r\n"), true, nil
	case "auth":
		pw := s.h.password()
		switch {
		case len(s.args) != 2:
			return wrongArgs(name), false, nil
		case pw == "":
			return errReply("Client sent AUTH, but no password is set"), false, nil
		case string(s.args[1]) != pw:
			s.authed = false
			s.h.Stats.ClientError("auth")
			return errReply("invalid password"), false, nil
		}
		s.authed = true
		return localReply("+OK\r\n"), false, nil
	default: // select
		if len(s.args) != 2 {
			return wrongArgs(name), false, nil
		}
		if string(s.args[1]) != "0" {
			return errReply("the ambassador serves database 0 only (set redis_db in the pool to use another)"), false, nil
		}
		return localReply("+OK\r\n"), false, nil
	}
}

func (s *state) forward(key []byte, class int) *reply {
	srv, h := s.h.Pool.Route(key)
	if srv == nil {
		return errReply(backend.ErrNoServer.Error())
	}
	c := backend.NewCall()
	c.Req = append(c.Req, s.raw...)
	r := newReply()
	r.class = class
	r.calls = append(r.calls, c)
	srv.Do(c, h, s.batch)
	return r
}

// multi splits a multi-key command into one sub-command per server.
func (s *state) multi(name []byte, class int) *reply {
	step := 1
	if class == multiSet {
		step = 2
	}
	if len(s.args) < 2 || (len(s.args)-1)%step != 0 {
		return wrongArgs(name)
	}
	if class == multiGet {
		return s.mget()
	}
	var srvBuf [16]*backend.Server
	var hashBuf [16]uint32
	var cntBuf [16]int
	srvs, hs, cnt := srvBuf[:0], hashBuf[:0], cntBuf[:0]
	r := newReply()
	r.class = class
	for i := 1; i < len(s.args); i += step {
		srv, h := s.h.Pool.Route(s.args[i])
		if srv == nil {
			r.release()
			return errReply(backend.ErrNoServer.Error())
		}
		ci := -1
		for j, x := range srvs {
			if x == srv {
				ci = j
				break
			}
		}
		if ci < 0 {
			ci = len(srvs)
			srvs, hs, cnt = append(srvs, srv), append(hs, h), append(cnt, 0)
		}
		cnt[ci]++
		r.owner = append(r.owner, ci)
	}
	if len(srvs) == 1 {
		// Every key on one server: the request goes as it came.
		c := backend.NewCall()
		c.Req = append(c.Req, s.raw...)
		r.calls = append(r.calls, c)
		r.owner = r.owner[:0]
		srvs[0].Do(c, hs[0], s.batch)
		return r
	}
	for j := range srvs {
		c := backend.NewCall()
		c.Req = append(c.Req, '*')
		c.Req = strconv.AppendInt(c.Req, int64(1+cnt[j]*step), 10)
		c.Req = append(c.Req, '\r', '\n')
		c.Req = appendBulk(c.Req, name)
		r.calls = append(r.calls, c)
	}
	for k, ci := range r.owner {
		i := 1 + k*step
		c := r.calls[ci]
		c.Req = appendBulk(c.Req, s.args[i])
		if step == 2 {
			c.Req = appendBulk(c.Req, s.args[i+1])
		}
	}
	for j, c := range r.calls {
		srvs[j].Do(c, hs[j], s.batch)
	}
	return r
}

func lower(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
}

// mget sends the keys of an MGET for each server as part of that server's
// merged MGET: the MGETs of every client a loop reads at once cost each
// server one command, not one each.
func (s *state) mget() *reply {
	keys := s.args[1:]
	r := newReply()
	r.class, r.joined = multiGet, true
	srvs, hs := s.srvs[:0], s.hashes[:0]
	for _, key := range keys {
		srv, h := s.h.Pool.Route(key)
		if srv == nil {
			r.release()
			return errReply(backend.ErrNoServer.Error())
		}
		srvs, hs = append(srvs, srv), append(hs, h)
	}
	// Every entry is set below: each key is in one server's group.
	r.owner = slices.Grow(r.owner[:0], len(keys))[:len(keys)]
	r.parts = slices.Grow(r.parts[:0], len(keys))[:len(keys)]
	for k, srv := range srvs {
		if srv == nil {
			continue // sent with an earlier key of its server
		}
		group := append(s.group[:0], keys[k])
		for j := k + 1; j < len(srvs); j++ {
			if srvs[j] == srv {
				group = append(group, keys[j])
			}
		}
		c, first := srv.Join(group, hs[k], s.batch, mgetMerger{})
		ci := len(r.calls)
		r.calls = append(r.calls, c)
		for j, n := k, 0; j < len(srvs); j++ {
			if srvs[j] == srv {
				r.owner[j], r.parts[j] = ci, first+n
				n++
				if j > k {
					srvs[j] = nil
				}
			}
		}
		srvs[k] = nil
		clear(group)
		s.group = group[:0]
	}
	clear(srvs)
	s.srvs, s.hashes = srvs[:0], hs[:0]
	return r
}

// mgetMerger merges MGET keys for one server into one MGET.
type mgetMerger struct{}

func (mgetMerger) Begin(*backend.Call) {}

func (mgetMerger) Add(c *backend.Call, key []byte) { c.Req = appendBulk(c.Req, key) }

// End puts the command's header in front of its keys.
func (mgetMerger) End(c *backend.Call, keys int) {
	var buf [32]byte
	hdr := append(buf[:0], '*')
	hdr = strconv.AppendInt(hdr, int64(keys+1), 10)
	hdr = append(hdr, "\r\n$4\r\nMGET\r\n"...)
	n := len(c.Req)
	c.Req = append(c.Req, hdr...)
	copy(c.Req[len(hdr):], c.Req[:n])
	copy(c.Req, hdr)
}

// Split finds each key's value in the array the server answered.
func (mgetMerger) Split(c *backend.Call) {
	b := c.Reply
	eol := bytes.IndexByte(b, '\n')
	if len(b) == 0 || b[0] != '*' || eol < 0 {
		return // an error reply: written as it is
	}
	n, err := parseInt(b[1 : eol-1])
	if err != nil {
		return
	}
	off := eol + 1
	for range n {
		l, ok := valueLen(b[off:])
		if !ok {
			return
		}
		c.Parts = append(c.Parts, off, off+l)
		off += l
	}
}
