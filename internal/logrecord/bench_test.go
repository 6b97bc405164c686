package logrecord

import "testing"

var nginxLine = []byte(`10.1.2.3 - - [26/Nov/2026:10:00:00 +0000] "GET /api/v1/items/00001234 HTTP/1.1" 200 1234 "-" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"`)

func BenchmarkNginx(b *testing.B) {
	var r Record
	var p Nginx
	b.ReportAllocs()
	b.SetBytes(int64(len(nginxLine)))
	for b.Loop() {
		r.Reset()
		p.Parse(nginxLine, &r)
	}
}

// BenchmarkNginxRegex is the regular expression the hand-written parser
// replaces, for comparison.
func BenchmarkNginxRegex(b *testing.B) {
	re, err := NewRegex(`^(?P<remote_addr>\S+) - (?P<remote_user>\S+) \[(?P<time_local>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>[^"]+)" (?P<status>\d+) (?P<body_bytes_sent>\d+) "(?P<http_referer>[^"]*)" "(?P<http_user_agent>[^"]*)"`, "", "")
	if err != nil {
		b.Fatal(err)
	}
	var r Record
	b.ReportAllocs()
	b.SetBytes(int64(len(nginxLine)))
	for b.Loop() {
		r.Reset()
		re.Parse(nginxLine, &r)
	}
}
