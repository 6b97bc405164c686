// Command adapter serves an application's native monitoring data (nginx
// stub_status, JSON, memcached stats, Redis INFO, StatsD, a Prometheus or
// OpenMetrics endpoint) as one Prometheus exposition on /metrics.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/podkit/podkit/internal/adapter/collect"
	"github.com/podkit/podkit/internal/adapter/config"
	"github.com/podkit/podkit/internal/adapter/statsd"
	"github.com/podkit/podkit/internal/adapter/stubstatus"
	"github.com/podkit/podkit/internal/admin"
	"github.com/podkit/podkit/internal/cli"
	"github.com/podkit/podkit/internal/podenv"
)

var version = "dev"

func main() { cli.Main(run) }

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := cli.New("adapter", getenv)
	listen := fs.String("listen", ":9113", "address serving /metrics, /healthz and /readyz")
	sources := fs.Strings("source", "a source as KIND=ADDRESS, KIND one of nginx, memcached, redis, json, prometheus, statsd "+
		"(nginx=http://127.0.0.1:8081/stub_status, memcached=127.0.0.1:11211, redis=127.0.0.1:6379, "+
		"prometheus=http://127.0.0.1:8080/metrics, statsd=127.0.0.1:9125; statsd alone listens there)")
	configFile := fs.String("config", "", "YAML file with more sources, JSON mappings, StatsD mappings and re-exposition rules")
	naming := fs.String("naming", "compat", "metric names: compat (the exporters' names, dashboards keep working) or standard (every counter ends in _total; passes promtool check metrics)")
	scrapeTimeout := fs.Duration("scrape-timeout", 5*time.Second, "how long one fetch of a source may take; Prometheus's own scrape timeout lowers it")
	webConfig := fs.String("web-config", "", "exporter-toolkit web configuration file: TLS and basic auth for every path")
	openMetrics := fs.Bool("openmetrics", true, "answer OpenMetrics to scrapers that ask for it (counters without _total are then untyped)")
	statsdMapping := fs.String("statsd-mapping", "", "statsd_exporter mapping file for -source statsd=ADDRESS")
	if code, ok := fs.HandleParseError(fs.Parse(args), version, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return fs.Usagef(stderr, "unexpected argument %q", fs.Arg(0))
	}
	if _, err := podenv.ApplyMemoryLimit(getenv); err != nil {
		return fs.Usagef(stderr, "%v", err)
	}
	var nm stubstatus.Naming
	switch *naming {
	case "compat":
		nm = stubstatus.Compat
	case "standard":
		nm = stubstatus.Standard
	default:
		return fs.Usagef(stderr, "-naming %q: want compat or standard", *naming)
	}
	if *scrapeTimeout <= 0 {
		return fs.Usagef(stderr, "-scrape-timeout must be positive")
	}
	var srcs []config.Source
	for _, v := range *sources {
		s, err := config.ParseFlag(v)
		if err != nil {
			return fs.Usagef(stderr, "%v", err)
		}
		if s.Kind == "statsd" && *statsdMapping != "" {
			s.MappingFile = *statsdMapping
		}
		srcs = append(srcs, s)
	}
	if *configFile != "" {
		f, err := config.Load(*configFile)
		if err != nil {
			return fs.Usagef(stderr, "%v", err)
		}
		srcs = append(srcs, f.Sources...)
	}
	log := fs.Logger(stderr)
	reg := prometheus.NewRegistry()
	built, err := config.Build(srcs, config.Options{Naming: nm, UserAgent: "podkit-adapter/" + version, Getenv: getenv,
		Statsd: statsd.Options{Reg: reg, Log: log}})
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			fmt.Fprintf(stderr, "adapter: %v\n", err)
			return cli.ExitFailure
		}
		return fs.Usagef(stderr, "%v", err)
	}
	c, err := collect.New(built.Specs, *scrapeTimeout, reg, collect.NewRuntimeRegistry(version), log)
	if err != nil {
		built.Close()
		return fs.Usagef(stderr, "%v", err)
	}
	srv := admin.NewWithMetrics(c.MetricsHandler(*openMetrics), log)
	srv.AddCheck("sources", c.Ready)
	if err := srv.SetWebConfig(*webConfig); err != nil {
		built.Close()
		return fs.Usagef(stderr, "-web-config: %v", err)
	}
	if err := srv.Listen(*listen); err != nil {
		built.Close()
		fmt.Fprintf(stderr, "adapter: %v\n", err)
		return cli.ExitFailure
	}
	names := make([]string, 0, len(built.Specs))
	for _, s := range built.Specs {
		names = append(names, s.Name)
	}
	attrs := []any{"version", version, "listen", srv.Addr().String(), "sources", names}
	for _, f := range podenv.FromEnv(getenv).Fields() {
		attrs = append(attrs, f[0], f[1])
	}
	log.Info("adapter started", attrs...)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx, nil, fs.ShutdownTimeout) })
	g.Go(func() error { return built.Run(gctx) })
	err = g.Wait()
	c.Close()
	if err != nil {
		log.Error("adapter stopped", "err", err)
		return cli.ExitFailure
	}
	log.Info("adapter stopped")
	return cli.ExitOK
}
