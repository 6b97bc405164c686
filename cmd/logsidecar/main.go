// Command logsidecar follows log files on a shared volume and ships every
// line, with the pod's identity, to Fluentd or Fluent Bit over the forward
// protocol and/or to its own stdout.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
