package backend

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/podkit/podkit/internal/cacheproxy/config"
	"github.com/podkit/podkit/internal/cacheproxy/ring"
)

// Pool is a named set of servers and the ring over the live ones. Its
// configuration can change (Update) while clients use it.
type Pool struct {
	name    string
	codec   Codec
	log     *slog.Logger
	metrics *Metrics

	mu      sync.Mutex // serialises rebuilds and updates
	state   atomic.Pointer[poolState]
	closing sync.WaitGroup // servers being drained after a reload
}

type poolState struct {
	cfg     *config.Pool
	servers []*Server
	ring    *ring.Ring
}

// NewPool starts the servers of cfg.
func NewPool(cfg *config.Pool, codec Codec, m *Metrics, log *slog.Logger) *Pool {
	p := &Pool{name: cfg.Name, codec: codec, log: log, metrics: m}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := &poolState{cfg: cfg}
	opts := optsOf(cfg)
	for _, s := range cfg.Servers {
		st.servers = append(st.servers, newServer(p, s, opts))
	}
	p.install(st)
	return p
}

// Config is the pool's current configuration.
func (p *Pool) Config() *config.Pool { return p.state.Load().cfg }

// Servers lists the current servers.
func (p *Pool) Servers() []*Server { return p.state.Load().servers }

// Route returns the server holding key and the key's hash; nil when no
// server is live.
func (p *Pool) Route(key []byte) (*Server, uint32) {
	st := p.state.Load()
	h := st.ring.HashKey(key)
	i := st.ring.LocateHash(h)
	if i < 0 {
		return nil, h
	}
	return st.servers[i], h
}

// LiveCount is the number of servers taking requests.
func (p *Pool) LiveCount() int {
	n := 0
	for _, s := range p.state.Load().servers {
		if s.Live() {
			n++
		}
	}
	return n
}

// install builds the ring for st from the servers' liveness; p.mu held.
func (p *Pool) install(st *poolState) {
	cfg := st.cfg
	var live []bool
	// Only the twemproxy policy with ejection takes servers off the ring;
	// the mcrouter policy keeps placement and fails fast instead.
	if cfg.FailurePolicy == config.Twemproxy && cfg.AutoEjectHosts {
		live = make([]bool, len(st.servers))
		for i, s := range st.servers {
			live[i] = s.Live()
		}
	}
	st.ring = ring.New(cfg.Distribution, cfg.HashFunc, cfg.HashTag, cfg.RingServers(), live)
	p.state.Store(st)
}

// rebuild recomputes the ring after a server went down or came back.
func (p *Pool) rebuild() {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.state.Load()
	p.install(&poolState{cfg: old.cfg, servers: old.servers})
}

// Update moves the pool to cfg and codec: servers that did not change
// keep their connections, new ones start, removed ones finish their queued
// calls and close in the background. A new codec (another redis_auth or
// redis_db) renews every server, since its connections were set up for the
// old one.
func (p *Pool) Update(cfg *config.Pool, codec Codec) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.state.Load()
	opts := optsOf(cfg)
	keep := map[string]*Server{}
	if codec == p.codec {
		for _, s := range old.servers {
			if s.opts == opts {
				keep[s.Name+"\x00"+s.Addr] = s
			}
		}
	}
	p.codec = codec
	st := &poolState{cfg: cfg}
	for _, sc := range cfg.Servers {
		if s, ok := keep[sc.Name+"\x00"+sc.Addr]; ok {
			delete(keep, sc.Name+"\x00"+sc.Addr)
			st.servers = append(st.servers, s)
			continue
		}
		st.servers = append(st.servers, newServer(p, sc, opts))
	}
	p.install(st)
	for _, s := range old.servers {
		if _, gone := keep[s.Name+"\x00"+s.Addr]; gone || !contains(st.servers, s) {
			p.closing.Add(1)
			go func() {
				defer p.closing.Done()
				s.close()
				p.metrics.forget(p.name, s.Name, st.servers)
			}()
		}
	}
}

func contains(ss []*Server, s *Server) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Close stops every server after its queued calls are done.
func (p *Pool) Close() {
	p.mu.Lock()
	st := p.state.Load()
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range st.servers {
		wg.Add(1)
		go func() { defer wg.Done(); s.close() }()
	}
	wg.Wait()
	p.closing.Wait()
}
