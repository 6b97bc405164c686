// Package cacheproxy runs the ambassador's pools: one listener per pool,
// client connections handed to the pool's protocol, reloads that keep
// client connections, readiness and shutdown.
package cacheproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podkit/podkit/internal/cacheproxy/backend"
	"github.com/podkit/podkit/internal/cacheproxy/config"
	"github.com/podkit/podkit/internal/cacheproxy/memcache"
	"github.com/podkit/podkit/internal/cacheproxy/redis"
)

// Options are the settings that are not in the pool configuration.
type Options struct {
	Log      *slog.Logger
	Registry prometheus.Registerer
	Version  string
	// MaxValue bounds one value (and so one request) in bytes.
	MaxValue int
}

// Proxy serves every pool of a configuration.
type Proxy struct {
	opts    Options
	metrics *backend.Metrics
	reloads *prometheus.CounterVec

	mu    sync.Mutex
	pools map[string]*listener
	wg    sync.WaitGroup // accept loops, client connections, retired pools
}

type connHandler interface {
	ServeConn(nc net.Conn, done <-chan struct{})
}

// listener is one pool's listening socket and its client connections.
type listener struct {
	cfg     *config.Pool
	pool    *backend.Pool
	ln      net.Listener
	handler connHandler
	stats   *backend.PoolStats
	done    chan struct{} // closed: connections finish what they read and close
	conns   sync.WaitGroup
}

// New binds every pool's listen address and connects nothing yet (servers
// are dialled on first use, or at once with preconnect).
func New(cfg *config.Config, opts Options) (*Proxy, error) {
	p := &Proxy{opts: opts, pools: map[string]*listener{}, metrics: backend.NewMetrics(opts.Registry)}
	p.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ambassador", Name: "config_reloads_total",
		Help: "Configuration reloads by result: ok or error (an error keeps the running configuration)."}, []string{"result"})
	opts.Registry.MustRegister(p.reloads)
	ls := map[string]*listener{}
	for _, pc := range cfg.Pools {
		l, err := p.listen(pc)
		if err != nil {
			for _, l := range ls {
				l.ln.Close()
				l.pool.Close()
			}
			return nil, err
		}
		ls[pc.Name] = l
	}
	p.pools = ls
	for _, l := range ls {
		p.serve(l)
	}
	return p, nil
}

func (p *Proxy) listen(pc *config.Pool) (*listener, error) {
	network := "tcp"
	if pc.ListenUnix {
		network = "unix"
		_ = os.Remove(pc.Listen)
	}
	lc := net.ListenConfig{}
	ln, err := lc.Listen(context.Background(), network, pc.Listen)
	if err != nil {
		return nil, fmt.Errorf("pool %s: listen %s: %w", pc.Name, pc.Listen, err)
	}
	if pc.ListenUnix && pc.ListenPerm != 0 {
		_ = os.Chmod(pc.Listen, pc.ListenPerm)
	}
	l := &listener{cfg: pc, ln: ln, done: make(chan struct{})}
	log := p.opts.Log.With("pool", pc.Name)
	if pc.Redis {
		l.pool = backend.NewPool(pc, p.codec(pc), p.metrics, log)
		l.stats = p.metrics.Pool(pc.Name, redis.CommandNames())
		l.handler = &redis.Handler{Pool: l.pool, Stats: l.stats, MaxValue: p.opts.MaxValue}
	} else {
		l.pool = backend.NewPool(pc, p.codec(pc), p.metrics, log)
		l.stats = p.metrics.Pool(pc.Name, memcache.Commands)
		l.handler = &memcache.Handler{Pool: l.pool, Stats: l.stats, MaxValue: p.opts.MaxValue, Version: p.opts.Version}
	}
	return l, nil
}

// codec is the server-side protocol of a pool.
func (p *Proxy) codec(pc *config.Pool) backend.Codec {
	if pc.Redis {
		return redis.Codec{MaxValue: p.opts.MaxValue, Auth: pc.RedisAuth, DB: pc.RedisDB}
	}
	return memcache.Codec{MaxValue: p.opts.MaxValue}
}

func (p *Proxy) serve(l *listener) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			nc, err := l.ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				p.opts.Log.Warn("accept", "pool", l.cfg.Name, "err", err)
				continue
			}
			if tc, ok := nc.(*net.TCPConn); ok {
				_ = tc.SetNoDelay(true)
			}
			l.conns.Add(1)
			l.stats.Clients.Inc()
			go func() {
				defer l.conns.Done()
				defer l.stats.Clients.Dec()
				l.handler.ServeConn(nc, l.done)
			}()
		}
	}()
}

// Addr returns the bound address of a pool's listener ("" if none).
func (p *Proxy) Addr(pool string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.pools[pool]; ok {
		return l.ln.Addr().String()
	}
	return ""
}

// Pool returns the named pool, for tests and diagnostics.
func (p *Proxy) Pool(name string) *backend.Pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.pools[name]; ok {
		return l.pool
	}
	return nil
}

// Reload moves the proxy to cfg without dropping client connections: a
// pool whose listen address and protocol stay keeps its listener and its
// clients and changes its servers; new pools start; removed pools stop
// accepting and close their clients once their requests are answered. If a
// new listener cannot be bound nothing changes (except a pool that switched
// protocol on the same address: its old listener is already closed).
func (p *Proxy) Reload(cfg *config.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	fresh := map[string]*listener{}
	var keep []*config.Pool
	for _, pc := range cfg.Pools {
		if old, ok := p.pools[pc.Name]; ok && old.cfg.Listen == pc.Listen && old.cfg.Redis == pc.Redis {
			keep = append(keep, pc)
			continue
		}
		if old, ok := p.pools[pc.Name]; ok && old.cfg.Listen == pc.Listen {
			// Same address, other protocol: the old listener must go first.
			p.retire(old)
			delete(p.pools, pc.Name)
		}
		l, err := p.listen(pc)
		if err != nil {
			for _, l := range fresh {
				l.ln.Close()
				l.pool.Close()
			}
			p.reloads.WithLabelValues("error").Inc()
			return err
		}
		fresh[pc.Name] = l
	}
	for _, pc := range keep {
		l := p.pools[pc.Name]
		l.pool.Update(pc, p.codec(pc))
		l.cfg = pc
		if h, ok := l.handler.(*redis.Handler); ok {
			h.SetAuth(pc.RedisAuth)
		}
	}
	for name, l := range p.pools {
		if cfg.Pool(name) == nil || fresh[name] != nil {
			p.retire(l)
			delete(p.pools, name)
		}
	}
	for name, l := range fresh {
		p.pools[name] = l
		p.serve(l)
	}
	p.reloads.WithLabelValues("ok").Inc()
	return nil
}

// ReloadFailed counts a configuration that could not be read or parsed.
func (p *Proxy) ReloadFailed() { p.reloads.WithLabelValues("error").Inc() }

// retire stops a pool in the background; p.mu held.
func (p *Proxy) retire(l *listener) {
	l.ln.Close()
	close(l.done)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		l.conns.Wait()
		l.pool.Close()
	}()
}

// Ready reports whether every pool has a live server.
func (p *Proxy) Ready(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range sortedNames(p.pools) {
		l := p.pools[name]
		if l.pool.LiveCount() == 0 {
			return fmt.Errorf("pool %s: no live server (%d down)", name, len(l.pool.Servers()))
		}
	}
	return nil
}

// Shutdown stops accepting, lets every connection finish the requests it
// has read, and closes the server connections. It returns when all of that
// is done or ctx ends.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	for name, l := range p.pools {
		p.retire(l)
		delete(p.pools, name)
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
