// Command logsidecar follows log files on a shared volume and ships every
// line, with the pod's identity, to Fluentd or Fluent Bit over the forward
// protocol and/or to its own stdout.
package main

import "github.com/podkit/podkit/internal/cli"

var version = "dev"

func main() { cli.Main(run) }
