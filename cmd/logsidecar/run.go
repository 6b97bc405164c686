package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/podkit/podkit/internal/admin"
	"github.com/podkit/podkit/internal/cli"
	"github.com/podkit/podkit/internal/logpipe"
	"github.com/podkit/podkit/internal/logrecord"
	"github.com/podkit/podkit/internal/podenv"
	"github.com/podkit/podkit/internal/ship"
	"github.com/podkit/podkit/internal/tail"
)

// bytesFlag is a byte count flag: 16777216, 16Mi or 16M.
type bytesFlag int64

func (b *bytesFlag) String() string { return strconv.FormatInt(int64(*b), 10) }
func (b *bytesFlag) Set(v string) error {
	n, err := podenv.ParseBytes(v)
	if err != nil {
		return err
	}
	*b = bytesFlag(n)
	return nil
}

type options struct {
	paths, excludes, fields, outputs *cli.StringList

	positions                                       string
	fromTail                                        bool
	scanInterval, pollInterval, rotateWait, flushTO time.Duration
	ckptInterval                                    time.Duration
	maxLine                                         bytesFlag
	parser, regex, timeKey, timeFormat              string
	multiline, mlStart                              string
	mlMaxLines                                      int
	mlMaxBytes                                      bytesFlag
	mlFlush                                         time.Duration
	pathKey, tag, stdoutFormat                      string
	bufferBytes                                     bytesFlag
	adminAddr                                       string
	webConfig                                       string
	fwdMode                                         string
	fwdChunkRecords                                 int
	fwdChunkBytes                                   bytesFlag
	fwdFlush, fwdConnectTO, fwdWriteTO, fwdAckTO    time.Duration
	fwdInflight                                     int
	fwdNoAck, fwdTLS, fwdTLSInsecure                bool
	fwdTLSCA, fwdTLSServerName                      string
	fwdSharedKey, fwdHostname, fwdUser, fwdPassword string
	fwdBackoffMax                                   time.Duration
}

func flags(fs *cli.FlagSet) *options {
	o := &options{maxLine: 64 << 10, mlMaxBytes: 256 << 10, bufferBytes: 16 << 20, fwdChunkBytes: 256 << 10}
	o.paths = fs.Strings("path", "glob of files to follow (symlinks are followed)")
	o.excludes = fs.Strings("exclude", "glob of files not to follow, matched against the path and the base name")
	o.fields = fs.Strings("field", "static field key=value added to every record")
	o.outputs = fs.Strings("output", "forward://host:port[,host:port...] or stdout")
	fs.StringVar(&o.positions, "positions-file", "", "checkpoint file (put it on the shared volume); empty keeps no checkpoints")
	fs.BoolVar(&o.fromTail, "from-tail", false, "start files found at start-up without a checkpoint at their end (default: from the head)")
	fs.DurationVar(&o.scanInterval, "scan-interval", time.Second, "how often the globs are expanded again for new files")
	fs.DurationVar(&o.pollInterval, "poll-interval", 100*time.Millisecond, "how often a file at its end is checked for new data")
	fs.DurationVar(&o.rotateWait, "rotate-wait", 5*time.Second, "how long a rotated or deleted file is still read after its last new data")
	fs.DurationVar(&o.flushTO, "flush-timeout", 5*time.Second, "how long an unfinished last line waits for its end")
	fs.DurationVar(&o.ckptInterval, "checkpoint-interval", time.Second, "how often the positions file is written")
	fs.Var(&o.maxLine, "max-line-bytes", "longer lines are truncated, marked truncated=true and counted")
	fs.StringVar(&o.parser, "parser", "raw", "raw, json, regex, nginx or cri")
	fs.StringVar(&o.regex, "regex", "", "regular expression with named groups, for -parser regex")
	fs.StringVar(&o.timeKey, "time-key", "time", "field that holds the event time, for json and regex")
	fs.StringVar(&o.timeFormat, "time-format", "", "Go time layout of -time-key (default RFC 3339)")
	fs.StringVar(&o.multiline, "multiline", "", "join multiline events: go, java, python or regex (with -multiline-start)")
	fs.StringVar(&o.mlStart, "multiline-start", "", "regular expression matching the first line of an event")
	fs.IntVar(&o.mlMaxLines, "multiline-max-lines", 500, "most lines in one joined event")
	fs.Var(&o.mlMaxBytes, "multiline-max-bytes", "most bytes in one joined event")
	fs.DurationVar(&o.mlFlush, "multiline-flush", 3*time.Second, "how long a joined event waits for more lines")
	fs.StringVar(&o.pathKey, "path-key", "file", "record key of the file path; empty for none")
	fs.StringVar(&o.tag, "tag", "kube.{namespace_name}.{pod_name}.{container_name}.{file}", "forward tag template: {file}, {path} and the pod fields")
	fs.StringVar(&o.stdoutFormat, "stdout-format", "json", "json or raw")
	fs.Var(&o.bufferBytes, "buffer-bytes", "memory bound for data not yet acknowledged, per output; reading pauses beyond it")
	fs.StringVar(&o.adminAddr, "admin-addr", ":9102", "admin address: /healthz /readyz /metrics")
	fs.StringVar(&o.webConfig, "web-config", "", "exporter-toolkit web configuration file: TLS and basic auth for the admin address")
	fs.StringVar(&o.fwdMode, "forward-mode", "packed", "packed (PackedForward), compressed (gzip) or forward")
	fs.IntVar(&o.fwdChunkRecords, "forward-chunk-records", 8192, "most records in a chunk")
	fs.Var(&o.fwdChunkBytes, "forward-chunk-bytes", "most bytes in a chunk")
	fs.DurationVar(&o.fwdFlush, "forward-flush-interval", 200*time.Millisecond, "a chunk is sent at the latest this long after its first record")
	fs.IntVar(&o.fwdInflight, "forward-max-inflight", 8, "chunks sent and not yet acknowledged")
	fs.DurationVar(&o.fwdConnectTO, "forward-connect-timeout", 5*time.Second, "connect and handshake timeout")
	fs.DurationVar(&o.fwdWriteTO, "forward-write-timeout", 10*time.Second, "write timeout")
	fs.DurationVar(&o.fwdAckTO, "forward-ack-timeout", 30*time.Second, "a chunk not acknowledged in this time is sent again on a new connection")
	fs.DurationVar(&o.fwdBackoffMax, "forward-backoff-max", 30*time.Second, "longest wait between reconnects (exponential from 100ms, with jitter)")
	fs.BoolVar(&o.fwdNoAck, "forward-no-ack", false, "do not ask for acks (at-most-once; only for receivers that cannot ack)")
	fs.BoolVar(&o.fwdTLS, "forward-tls", false, "connect with TLS")
	fs.StringVar(&o.fwdTLSCA, "forward-tls-ca", "", "PEM file of CAs to verify the server (default: system roots)")
	fs.StringVar(&o.fwdTLSServerName, "forward-tls-server-name", "", "server name to verify (default: the host)")
	fs.BoolVar(&o.fwdTLSInsecure, "forward-tls-insecure", false, "do not verify the server certificate")
	fs.StringVar(&o.fwdSharedKey, "forward-shared-key", "", "shared_key for the forward handshake")
	fs.StringVar(&o.fwdHostname, "forward-hostname", "", "self hostname in the handshake (default: POD_NAME or the hostname)")
	fs.StringVar(&o.fwdUser, "forward-username", "", "username for the handshake's user auth")
	fs.StringVar(&o.fwdPassword, "forward-password", "", "password for the handshake's user auth")
	return o
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := cli.New("logsidecar", getenv)
	o := flags(fs)
	err := fs.Parse(args)
	if code, ok := fs.HandleParseError(err, version, stdout, stderr); !ok {
		return code
	}
	if len(*o.paths) == 0 {
		return fs.Usagef(stderr, "-path is empty: give at least one glob of files to follow")
	}
	if len(*o.outputs) == 0 {
		return fs.Usagef(stderr, "-output is empty: give forward://host:port and/or stdout")
	}
	limit, err := podenv.ApplyMemoryLimit(getenv)
	if err != nil {
		return fs.Usagef(stderr, "%v", err)
	}
	log := fs.Logger(stderr)
	id := podenv.FromEnv(getenv)

	reg := admin.NewRegistry("logsidecar", version)
	drops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "logsidecar_dropped_total",
		Help: "Losses that could not be avoided, by reason: line_truncated, multiline_truncated, deleted_before_read.",
	}, []string{"reason"})
	for _, r := range []string{"line_truncated", "multiline_truncated", "deleted_before_read"} {
		drops.WithLabelValues(r)
	}
	reg.MustRegister(drops)
	drop := func(reason string, n int) { drops.WithLabelValues(reason).Add(float64(n)) }
	sm, err := ship.NewMetrics(reg)
	if err != nil {
		log.Error("metrics", "err", err)
		return cli.ExitFailure
	}

	var fields [][2]string
	fields = append(fields, id.Fields()...)
	for _, f := range *o.fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return fs.Usagef(stderr, "-field %q: want key=value", f)
		}
		fields = append(fields, [2]string{k, v})
	}

	// Outputs.
	var outputs []ship.Output
	for _, spec := range *o.outputs {
		switch {
		case spec == "stdout":
			if o.stdoutFormat != "json" && o.stdoutFormat != "raw" {
				return fs.Usagef(stderr, "-stdout-format %q: want json or raw", o.stdoutFormat)
			}
			outputs = append(outputs, ship.NewStdout(stdout, o.stdoutFormat == "raw", sm, log))
		case strings.HasPrefix(spec, "forward://"):
			cfg, err := forwardConfig(o, strings.TrimPrefix(spec, "forward://"), id)
			if err != nil {
				return fs.Usagef(stderr, "-output %q: %v", spec, err)
			}
			cfg.Log, cfg.Metrics = log.With("output", "forward"), sm
			fw, err := ship.NewForward(cfg)
			if err != nil {
				return fs.Usagef(stderr, "-output %q: %v", spec, err)
			}
			outputs = append(outputs, fw)
		default:
			return fs.Usagef(stderr, "-output %q: want forward://host:port[,host:port...] or stdout", spec)
		}
	}
	seen := map[string]bool{}
	for _, out := range outputs {
		if seen[out.Name()] {
			return fs.Usagef(stderr, "-output: %s given twice (list several forward addresses in one -output for failover)", out.Name())
		}
		seen[out.Name()] = true
	}

	if limit == 0 && getenv("GOMEMLIMIT") == "" {
		// At full speed the reader outruns the network and the buffers
		// fill up to -buffer-bytes; a soft limit just above them keeps the
		// GC from doubling that in garbage.
		debug.SetMemoryLimit(int64(o.bufferBytes)*int64(len(outputs)) + 16<<20)
	}

	// Parsing.
	if _, err := logrecord.NewParser(o.parser, o.regex, o.timeKey, o.timeFormat); err != nil {
		return fs.Usagef(stderr, "-parser: %v", err)
	}
	newParser := func() logrecord.Parser {
		p, _ := logrecord.NewParser(o.parser, o.regex, o.timeKey, o.timeFormat)
		return p
	}
	var newJoiner func() *logrecord.Joiner
	if o.multiline != "" {
		if o.multiline == "regex" && o.mlStart == "" {
			return fs.Usagef(stderr, "-multiline regex needs -multiline-start")
		}
		rule, err := logrecord.NewRule(o.multiline, o.mlStart)
		if err != nil {
			return fs.Usagef(stderr, "-multiline: %v", err)
		}
		newJoiner = func() *logrecord.Joiner {
			return &logrecord.Joiner{Rule: rule, MaxLines: max(o.mlMaxLines, 1), MaxBytes: int(o.mlMaxBytes), Timeout: o.mlFlush}
		}
	}
	if o.positions != "" {
		// Fail at start, not at the first checkpoint a second later.
		tmp, err := os.CreateTemp(filepath.Dir(o.positions), ".logsidecar-probe*")
		if err != nil {
			return fs.Usagef(stderr, "-positions-file %s: directory not writable (%v): put it on a writable volume, such as the shared emptyDir", o.positions, err)
		}
		tmp.Close()
		os.Remove(tmp.Name())
	}
	pipe := logpipe.New(logpipe.Config{
		NewParser: newParser, CRI: o.parser == "cri", NewJoiner: newJoiner,
		MaxLineBytes: int(o.maxLine), Fields: fields, PathKey: o.pathKey,
		Tag: o.tag, Outputs: outputs, Drop: drop,
	})
	tl, err := tail.New(tail.Config{
		Paths: *o.paths, Exclude: *o.excludes,
		ScanInterval: o.scanInterval, PollInterval: o.pollInterval, RotateWait: o.rotateWait,
		FlushTimeout: o.flushTO, CheckpointInterval: o.ckptInterval, PositionsFile: o.positions,
		FromTail: o.fromTail, MaxLineBytes: int(o.maxLine),
		Log: log, NewHandler: pipe.NewHandler,
		Drop: drop,
	}, reg)
	if err != nil {
		return fs.Usagef(stderr, "-path/-positions-file: %v", err)
	}

	srv := admin.New(reg, log)
	for _, out := range outputs {
		srv.AddCheck("output "+out.Name(), out.Ready)
	}
	if err := srv.SetWebConfig(o.webConfig); err != nil {
		return fs.Usagef(stderr, "-web-config: %v", err)
	}
	if err := srv.Listen(o.adminAddr); err != nil {
		log.Error("admin", "err", err)
		return cli.ExitFailure
	}
	log.Info("starting", "version", version, "paths", *o.paths, "outputs", *o.outputs, "admin", srv.Addr().String())

	// drain bounds the shutdown: it ends -shutdown-timeout after SIGTERM.
	drain, drainCancel := context.WithCancel(context.Background())
	defer drainCancel()
	stopDrainTimer := context.AfterFunc(ctx, func() { time.AfterFunc(fs.ShutdownTimeout, drainCancel) })
	defer stopDrainTimer()
	outCtx, outCancel := context.WithCancel(context.Background())
	defer outCancel()
	drained := make(chan struct{})

	var g errgroup.Group
	g.Go(func() error { return srv.Run(ctx, drained, fs.ShutdownTimeout+time.Second) })
	for _, out := range outputs {
		g.Go(func() error { return out.Run(outCtx) })
	}
	g.Go(func() error {
		defer close(drained)
		defer outCancel()
		err := tl.Run(ctx, drain)
		start := time.Now()
		for _, out := range outputs {
			if derr := out.Drain(drain); derr != nil {
				log.Warn("shutdown before every record was acknowledged: they are read again after a restart", "output", out.Name(), "err", derr)
			}
		}
		if cerr := tl.Checkpoint(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
		return err
	})
	if err := g.Wait(); err != nil {
		log.Error("stopped", "err", err)
		return cli.ExitFailure
	}
	return cli.ExitOK
}

func forwardConfig(o *options, addrs string, id podenv.Identity) (ship.ForwardConfig, error) {
	cfg := ship.ForwardConfig{
		Mode: o.fwdMode, ChunkRecords: o.fwdChunkRecords, ChunkBytes: int(o.fwdChunkBytes),
		FlushInterval: o.fwdFlush, MaxInflight: o.fwdInflight, BufferBytes: int64(o.bufferBytes),
		ConnectTimeout: o.fwdConnectTO, WriteTimeout: o.fwdWriteTO, AckTimeout: o.fwdAckTO,
		NoAck: o.fwdNoAck, SharedKey: o.fwdSharedKey, Hostname: o.fwdHostname,
		Username: o.fwdUser, Password: o.fwdPassword, BackoffMax: o.fwdBackoffMax,
	}
	for _, a := range strings.Split(addrs, ",") {
		a = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(a); err != nil {
			return cfg, fmt.Errorf("address %q: want host:port", a)
		}
		cfg.Addrs = append(cfg.Addrs, a)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = id.PodName
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if o.fwdTLS || o.fwdTLSCA != "" || o.fwdTLSInsecure {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.fwdTLSServerName, InsecureSkipVerify: o.fwdTLSInsecure}
		if o.fwdTLSCA != "" {
			pem, err := os.ReadFile(o.fwdTLSCA)
			if err != nil {
				return cfg, fmt.Errorf("-forward-tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return cfg, fmt.Errorf("-forward-tls-ca %s: no PEM certificate in it", o.fwdTLSCA)
			}
			tc.RootCAs = pool
		}
		cfg.TLS = tc
	}
	return cfg, nil
}
