package memcached

import (
	"bufio"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

func TestReadStats(t *testing.T) {
	t.Parallel()
	f, err := os.Open("testdata/stats.txt") // memcached 1.6.18, after one set and one get
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := ReadStats(bufio.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	var b exposition.Batch
	Append(&b, "memcached", true, st)
	var out []byte
	out = b.AppendTo(out, exposition.Text)
	got := string(out)
	for _, want := range []string{
		"# TYPE memcached_uptime_seconds gauge\n",
		"memcached_current_items 1\n",
		"memcached_commands_total{command=\"get\",status=\"hit\"} 1\n",
		"memcached_commands_total{command=\"set\",status=\"hit\"} 1\n",
		"memcached_limit_bytes 67108864\n",
		"memcached_version{version=\"1.6.18\"} 1\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}

func TestReadStatsErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"ERROR\r\n", "STAT pid 1\r\n", "STAT\r\nEND\r\n", "SERVER_ERROR out of memory\r\n"} {
		if _, err := ReadStats(bufio.NewReader(strings.NewReader(in))); err == nil {
			t.Errorf("ReadStats(%q) accepted", in)
		} else if strings.HasPrefix(in, "STAT pid") {
			continue // EOF before END: a read error, not a protocol one
		} else if !errors.Is(err, ErrProtocol) {
			t.Errorf("ReadStats(%q) = %v, want ErrProtocol", in, err)
		}
	}
}
