package redisinfo

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

func TestAppend(t *testing.T) {
	t.Parallel()
	info, err := os.ReadFile("testdata/info.txt") // redis 7, INFO ALL after SET a and EXPIRE a
	if err != nil {
		t.Fatal(err)
	}
	var b exposition.Batch
	if err := Append(&b, "redis", info); err != nil {
		t.Fatal(err)
	}
	var out []byte
	out = b.AppendTo(out, exposition.Text)
	got := string(out)
	for _, want := range []string{
		"redis_db_keys{db=\"db0\"} 1\n",
		"redis_db_keys_expiring{db=\"db0\"} 1\n",
		"redis_commands_total{cmd=\"set\"} 1\n",
		"redis_commands_duration_seconds_total{cmd=\"set\"} 1e-05\n",
		"# TYPE redis_connections_received_total counter\n",
		"# TYPE redis_memory_used_bytes gauge\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}

func TestAppendErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"# Server\r\nnot a field\r\n", "# Server\r\nfoo:bar\r\n"} {
		var b exposition.Batch
		if err := Append(&b, "redis", []byte(in)); err == nil {
			t.Errorf("Append(%q) accepted", in)
		}
	}
}

func TestReadBulk(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"$5\r\nhello\r\n", "hello", true},
		{"-NOAUTH Authentication required.\r\n", "", false},
		{"$99999999\r\n", "", false},
		{"+OK\r\n", "", false},
		{"$5\r\nhel", "", false},
	}
	for _, tc := range tests {
		got, err := ReadBulk(bufio.NewReader(strings.NewReader(tc.in)), 1<<20)
		if (err == nil) != tc.ok || string(got) != tc.want {
			t.Errorf("ReadBulk(%q) = %q, %v", tc.in, got, err)
		}
	}
}
