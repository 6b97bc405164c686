// Command ambassador is a localhost cache proxy for the ambassador pattern:
// the app talks memcached or Redis to 127.0.0.1 and the ambassador shards
// its keys over external cache servers exactly as twemproxy would, from the
// same configuration file, on every core.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/podkit/podkit/internal/admin"
	"github.com/podkit/podkit/internal/cacheproxy"
	"github.com/podkit/podkit/internal/cacheproxy/config"
	"github.com/podkit/podkit/internal/cli"
	"github.com/podkit/podkit/internal/podenv"
)

var version = "dev"

// stdin is where -locate reads keys; tests replace it.
var stdin io.Reader = os.Stdin

func main() { cli.Main(run) }

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := cli.New("ambassador", getenv)
	configPath := fs.String("config", "", "nutcracker (twemproxy) YAML pool configuration; reloaded on SIGHUP and when it changes")
	poolName := fs.String("pool", "", "pool for -locate (default: the only pool)")
	locate := fs.Bool("locate", false, "read keys from stdin, one per line, print KEY<TAB>host:port of the server holding each, and exit")
	listen := fs.String("listen", "127.0.0.1:11211", "listen address of the single pool given by -servers")
	servers := fs.String("servers", "", "comma-separated host:port[:weight] of the single pool (instead of -config)")
	redisFlag := fs.Bool("redis", false, "the -servers pool speaks Redis instead of memcached")
	adminAddr := fs.String("admin-addr", ":9101", "admin address: /healthz, /readyz, /metrics")
	maxValue := fs.Int("max-value-bytes", 64<<20, "largest value (and request) accepted, in bytes")
	watch := fs.Duration("watch-interval", 5*time.Second, "how often to check -config for changes (0: only on SIGHUP)")
	webConfig := fs.String("web-config", "", "exporter-toolkit web configuration file: TLS and basic auth for the admin address")
	err := fs.Parse(args)
	if code, ok := fs.HandleParseError(err, version, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return fs.Usagef(stderr, "unexpected argument %q", fs.Arg(0))
	}
	if err := admin.ValidateWebConfig(*webConfig); err != nil {
		return fs.Usagef(stderr, "-web-config: %v", err)
	}
	if _, err := podenv.ApplyMemoryLimit(getenv); err != nil {
		return fs.Usagef(stderr, "%v", err)
	}
	if *maxValue < 1024 {
		return fs.Usagef(stderr, "-max-value-bytes must be at least 1024")
	}
	load := func() (*config.Config, error) {
		if *configPath != "" {
			return config.Load(*configPath)
		}
		var list []string
		if *servers != "" {
			list = strings.Split(*servers, ",")
		}
		return config.FromFlags("default", *listen, list, *redisFlag)
	}
	if *configPath != "" && *servers != "" {
		return fs.Usagef(stderr, "give -config or -servers, not both")
	}
	if *configPath == "" && *servers == "" {
		return fs.Usagef(stderr, "-config or -servers is required: give a nutcracker YAML file or host:port list")
	}
	cfg, err := load()
	if err != nil {
		return fs.Usagef(stderr, "%v", err)
	}
	if *locate {
		return runLocate(cfg, *poolName, stdin, stdout, stderr, fs)
	}

	log := fs.Logger(stderr)
	for _, f := range podenv.FromEnv(getenv).Fields() {
		log = log.With(f[0], f[1])
	}
	reg := admin.NewRegistry("ambassador", version)
	proxy, err := cacheproxy.New(cfg, cacheproxy.Options{Log: log, Registry: reg, Version: version, MaxValue: *maxValue})
	if err != nil {
		log.Error("start", "err", err)
		return cli.ExitFailure
	}
	adm := admin.New(reg, log)
	adm.AddCheck("pools", proxy.Ready)
	_ = adm.SetWebConfig(*webConfig) // checked above
	if err := adm.Listen(*adminAddr); err != nil {
		log.Error("start", "err", err)
		_ = proxy.Shutdown(context.Background())
		return cli.ExitFailure
	}
	for _, p := range cfg.Pools {
		log.Info("pool ready", "pool", p.Name, "listen", proxy.Addr(p.Name), "servers", len(p.Servers),
			"redis", p.Redis, "hash", p.Hash, "distribution", p.Distribution.String(), "failure_policy", p.FailurePolicy.String())
	}
	log.Info("ambassador started", "version", version, "admin", adm.Addr().String())

	var wg sync.WaitGroup
	drained := make(chan struct{})
	adminErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		adminErr <- adm.Run(ctx, drained, fs.ShutdownTimeout)
	}()
	if *configPath != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			watchConfig(ctx, *configPath, *watch, proxy, log)
		}()
	}
	code := cli.ExitOK
	select {
	case <-ctx.Done():
	case err := <-adminErr:
		log.Error("admin server", "err", err)
		code = cli.ExitFailure
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", fs.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), fs.ShutdownTimeout)
	if err := proxy.Shutdown(sctx); err != nil {
		log.Warn("shutdown timed out with requests in flight", "err", err)
	}
	cancel()
	close(drained)
	wg.Wait()
	log.Info("stopped")
	return code
}

// watchConfig reloads on SIGHUP and when the file's content changes (a
// ConfigMap update swaps a symlink, so content is compared, not mtimes).
func watchConfig(ctx context.Context, path string, every time.Duration, proxy *cacheproxy.Proxy, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	sum := fileSum(path)
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: reloading configuration", "config", path)
		case <-tick:
			s := fileSum(path)
			if bytes.Equal(s, sum) || s == nil {
				continue
			}
			log.Info("configuration changed: reloading", "config", path)
		}
		sum = fileSum(path)
		cfg, err := config.Load(path)
		if err != nil {
			proxy.ReloadFailed()
			log.Error("reload rejected: keeping the running configuration", "err", err)
			continue
		}
		if err := proxy.Reload(cfg); err != nil {
			log.Error("reload rejected: keeping the running configuration", "err", err)
			continue
		}
		log.Info("configuration reloaded", "pools", strings.Join(cfg.Names(), ","))
	}
}

func fileSum(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := sha256.Sum256(b)
	return s[:]
}

func runLocate(cfg *config.Config, name string, in io.Reader, stdout, stderr io.Writer, fs *cli.FlagSet) int {
	var p *config.Pool
	switch {
	case name != "":
		if p = cfg.Pool(name); p == nil {
			return fs.Usagef(stderr, "-pool %q is not in the configuration (pools: %s)", name, strings.Join(cfg.Names(), ", "))
		}
	case len(cfg.Pools) == 1:
		p = cfg.Pools[0]
	default:
		return fs.Usagef(stderr, "-pool is required with several pools (pools: %s)", strings.Join(cfg.Names(), ", "))
	}
	r := p.Ring()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	w := bufio.NewWriter(stdout)
	for sc.Scan() {
		key := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
		fmt.Fprintf(w, "%s\t%s\n", key, p.Servers[r.Locate(key)].Addr)
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "ambassador: write: %v\n", err)
		return cli.ExitFailure
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintf(stderr, "ambassador: read keys: %v\n", err)
		return cli.ExitFailure
	}
	return cli.ExitOK
}
