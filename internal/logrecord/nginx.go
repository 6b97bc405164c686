package logrecord

import (
	"bytes"
	"time"
)

// Nginx reads nginx's "combined" log format by hand, which is several times
// faster than the equivalent regular expression:
//
//	$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
//
// status and body_bytes_sent become numbers and $time_local the event time.
// A line in another format is kept as message with parse_error set.
type Nginx struct {
	// The last time seen: consecutive lines mostly share their second.
	lastRaw  [26]byte
	lastTime time.Time
}

// Parse implements Parser.
func (p *Nginx) Parse(line []byte, r *Record) {
	n := len(r.Fields)
	if !p.parse(line, r) {
		clear(r.Fields[n:])
		r.Fields = r.Fields[:n]
		r.Time = time.Time{}
		r.Str(KeyMessage, line)
		r.Bool(KeyParseError, true)
	}
}

func (p *Nginx) parse(s []byte, r *Record) bool {
	i := bytes.IndexByte(s, ' ')
	if i <= 0 {
		return false
	}
	r.Str("remote_addr", s[:i])
	s = s[i+1:]
	if len(s) < 2 || s[0] != '-' || s[1] != ' ' {
		return false
	}
	s = s[2:]
	i = bytes.IndexByte(s, ' ')
	if i <= 0 {
		return false
	}
	r.Str("remote_user", s[:i])
	s = s[i+1:]
	if len(s) < 28 || s[0] != '[' || s[27] != ']' {
		return false
	}
	if string(s[1:27]) == string(p.lastRaw[:]) && !p.lastTime.IsZero() {
		r.Time = p.lastTime
	} else {
		t, ok := nginxTime(s[1:27])
		if !ok {
			return false
		}
		copy(p.lastRaw[:], s[1:27])
		p.lastTime, r.Time = t, t
	}
	s = s[28:]
	if len(s) < 2 || s[0] != ' ' || s[1] != '"' {
		return false
	}
	s = s[2:]
	i = bytes.IndexByte(s, '"')
	if i < 0 {
		return false
	}
	req := s[:i]
	s = s[i+1:]
	if m := bytes.IndexByte(req, ' '); m > 0 {
		rest := req[m+1:]
		if p := bytes.LastIndexByte(rest, ' '); p > 0 {
			r.Str("method", req[:m])
			r.Str("path", rest[:p])
			r.Str("protocol", rest[p+1:])
		} else {
			r.Str("request", req)
		}
	} else {
		r.Str("request", req)
	}
	if len(s) < 1 || s[0] != ' ' {
		return false
	}
	s = s[1:]
	status, s, ok := nginxInt(s)
	if !ok || len(s) < 1 || s[0] != ' ' {
		return false
	}
	r.Int("status", status)
	size, s, ok := nginxInt(s[1:])
	if !ok {
		return false
	}
	r.Int("body_bytes_sent", size)
	for _, key := range [...]string{"http_referer", "http_user_agent"} {
		if len(s) < 2 || s[0] != ' ' || s[1] != '"' {
			return false
		}
		s = s[2:]
		i = bytes.IndexByte(s, '"')
		if i < 0 {
			return false
		}
		r.Str(key, s[:i])
		s = s[i+1:]
	}
	return true
}

func nginxInt(s []byte) (int64, []byte, bool) {
	if len(s) > 0 && s[0] == '-' { // "-" for an unknown count
		return 0, s[1:], true
	}
	var n int64
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9' && i < 18; i++ {
		n = n*10 + int64(s[i]-'0')
	}
	return n, s[i:], i > 0
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// nginxTime reads 02/Jan/2006:15:04:05 -0700.
func nginxTime(s []byte) (time.Time, bool) {
	if len(s) != 26 || s[2] != '/' || s[6] != '/' || s[11] != ':' || s[14] != ':' || s[17] != ':' || s[20] != ' ' {
		return time.Time{}, false
	}
	num := func(b []byte) (int, bool) {
		n := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	day, ok1 := num(s[0:2])
	year, ok2 := num(s[7:11])
	hh, ok3 := num(s[12:14])
	mm, ok4 := num(s[15:17])
	ss, ok5 := num(s[18:20])
	zh, ok6 := num(s[22:24])
	zm, ok7 := num(s[24:26])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) || (s[21] != '+' && s[21] != '-') {
		return time.Time{}, false
	}
	mon := 0
	for i, m := range months {
		if string(s[3:6]) == m {
			mon = i + 1
			break
		}
	}
	if mon == 0 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 || zm > 59 {
		return time.Time{}, false
	}
	off := (zh*60 + zm) * 60
	if s[21] == '-' {
		off = -off
	}
	// Build in UTC and shift by the offset: no time.FixedZone allocation.
	t := time.Date(year, time.Month(mon), day, hh, mm, ss, 0, time.UTC).Add(-time.Duration(off) * time.Second)
	return t, true
}
