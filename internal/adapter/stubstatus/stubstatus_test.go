package stubstatus

import (
	"errors"
	"fmt"
	"testing"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

// nginxBody is nginx 1.22's body, trailing spaces included.
const nginxBody = "Active connections: 1 \nserver accepts handled requests\n 1 1 1 \nReading: 0 Writing: 1 Waiting: 0 \n"

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		want    Status
		wantErr bool
	}{
		{"nginx 1.22", nginxBody, Status{Active: 1, Accepts: 1, Handled: 1, Requests: 1, Writing: 1}, false},
		{"crlf and big numbers", "Active connections: 291\r\nserver accepts handled requests\r\n 16630948 16630948 31070465\r\nReading: 6 Writing: 179 Waiting: 106\r\n",
			Status{291, 16630948, 16630948, 31070465, 6, 179, 106}, false},
		{"truncated", "Active connections: 1 \nserver accepts handled requests\n 1 1", Status{}, true},
		{"html error page", "<html><body>404</body></html>", Status{}, true},
		{"negative", "Active connections: -1 \nserver accepts handled requests\n 1 1 1 \nReading: 0 Writing: 1 Waiting: 0 \n", Status{}, true},
		{"trailing junk", nginxBody + "extra", Status{}, true},
		{"empty", "", Status{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tc.body))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrFormat) {
				t.Errorf("error %v does not wrap ErrFormat", err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(nginxBody))
	f.Add([]byte("Active connections: 2\nserver accepts handled requests\n 3 3 9\nReading: 0 Writing: 1 Waiting: 1\n"))
	f.Add([]byte("Active connections:"))
	f.Fuzz(func(t *testing.T, body []byte) {
		st, err := Parse(body)
		if err != nil {
			return
		}
		// A page that parses renders back to one that parses the same.
		again := fmt.Sprintf("Active connections: %d \nserver accepts handled requests\n %d %d %d \nReading: %d Writing: %d Waiting: %d \n",
			st.Active, st.Accepts, st.Handled, st.Requests, st.Reading, st.Writing, st.Waiting)
		st2, err := Parse([]byte(again))
		if err != nil || st2 != st {
			t.Fatalf("round trip: %+v -> %+v, %v", st, st2, err)
		}
	})
}

func TestAppendNamings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		naming Naming
		want   string
	}{{Compat, "nginx_connections_accepted"}, {Standard, "nginx_connections_accepted_total"}} {
		s := New("http://127.0.0.1/", nil, "nginx", tc.naming)
		var b exposition.Batch
		Append(&b, s.names, Status{Accepts: 5})
		if f := b.Get(0); f.Name != tc.want || f.Samples[0].Value != 5 {
			t.Errorf("naming %d: first family %+v, want %s 5", tc.naming, f, tc.want)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	body := []byte(nginxBody)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(body); err != nil {
			b.Fatal(err)
		}
	}
}
