package testserver

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Nutcracker starts twemproxy (nutcracker) with the given YAML
// configuration and waits until waitAddr (one of its pools' listen
// addresses) accepts connections. Its stats server gets a free port on
// 127.0.0.1; every path it writes is in a scratch directory.
func Nutcracker(t testing.TB, yml, waitAddr string) *Server {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "nutcracker.yml")
	if err := os.WriteFile(conf, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	return Start(t, dir, waitAddr, "nutcracker", "-c", conf,
		"-s", fmt.Sprint(FreePort(t)), "-a", "127.0.0.1",
		"-o", filepath.Join(dir, "nutcracker.log"), "-p", filepath.Join(dir, "nutcracker.pid"),
		"-v", "4")
}
