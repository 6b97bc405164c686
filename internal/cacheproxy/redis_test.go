package cacheproxy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/podkit/podkit/internal/testserver"
)

func threeRedis(t *testing.T, extra ...string) []*testserver.Server {
	return []*testserver.Server{testserver.Redis(t, extra...), testserver.Redis(t, extra...), testserver.Redis(t, extra...)}
}

// resp encodes a command as a RESP array.
func resp(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

func bulk(s string) string { return fmt.Sprintf("$%d\r\n%s\r\n", len(s), s) }

func TestRedisProtocol(t *testing.T) {
	t.Parallel()
	rs := threeRedis(t)
	p := startProxy(t, poolYAML("r", freeAddr(t), rs, "redis: true"))
	c := dial(t, p.Addr("r"))
	tests := []struct {
		name string
		req  string
		want string
	}{
		{"set/get", resp("SET", "a", "1") + resp("GET", "a"), "+OK\r\n" + bulk("1")},
		{"inline", "SET b 2\r\nget b\r\n", "+OK\r\n" + bulk("2")},
		{"mset split and merged", resp("MSET", "k1", "v1", "k2", "v2", "k3", "v3", "k4", "v4"), "+OK\r\n"},
		{"mget in key order", resp("MGET", "k4", "nope", "k1", "k3", "k2", "k1"),
			"*6\r\n" + bulk("v4") + "$-1\r\n" + bulk("v1") + bulk("v3") + bulk("v2") + bulk("v1")},
		{"exists summed", resp("EXISTS", "k1", "k2", "nope", "k3"), ":3\r\n"},
		{"touch summed", resp("TOUCH", "k1", "k2", "nope"), ":2\r\n"},
		{"del summed", resp("DEL", "k1", "k2", "nope"), ":2\r\n"},
		{"unlink summed", resp("UNLINK", "k3", "k4"), ":2\r\n"},
		{"ping", resp("PING") + resp("PING", "hi"), "+PONG\r\n" + bulk("hi")},
		{"echo", resp("ECHO", "x y"), bulk("x y")},
		{"select 0", resp("SELECT", "0"), "+OK\r\n"},
		{"select 1 refused", resp("SELECT", "1"), "-ERR the ambassador serves database 0 only (set redis_db in the pool to use another)\r\n"},
		{"auth without password", resp("AUTH", "x"), "-ERR Client sent AUTH, but no password is set\r\n"},
		{"unsupported keeps pipeline", resp("GET", "a") + resp("KEYS", "*") + resp("MULTI") + resp("GET", "b"),
			bulk("1") + "-ERR unsupported command 'keys': the ambassador shards keys over servers and cannot proxy it\r\n" +
				"-ERR unsupported command 'multi': the ambassador shards keys over servers and cannot proxy it\r\n" + bulk("2")},
		{"hash commands", resp("HSET", "h", "f", "v") + resp("HGETALL", "h"), ":1\r\n*2\r\n" + bulk("f") + bulk("v")},
		{"eval by first key", resp("EVAL", "return redis.call('GET', KEYS[1])", "1", "a"), bulk("1")},
		{"eval without keys", resp("EVAL", "return 1", "0"), "-ERR eval needs at least one key to be routed\r\n"},
		{"wrong arity", resp("GET"), "-ERR wrong number of arguments for 'get' command\r\n"},
		{"server error passes", resp("LPUSH", "a", "x"), "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"},
		{"mset odd", resp("MSET", "a"), "-ERR wrong number of arguments for 'mset' command\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.send(tt.req)
			c.expect(tt.want)
		})
	}
	c.t = t

	// Binary keys and a 1 MiB+ value.
	big := strings.Repeat("\x00\xffvalue", 200000)
	key := "bin\x00\r\n\xfe key"
	c.send(resp("SET", key, big) + resp("GET", key))
	c.expect("+OK\r\n" + bulk(big))

	// A 10,000-key MGET over three shards.
	args := []string{"MSET"}
	get := []string{"MGET"}
	var want bytes.Buffer
	fmt.Fprintf(&want, "*10000\r\n")
	for i := range 10000 {
		k := fmt.Sprintf("m:%d", i)
		get = append(get, k)
		if i%3 == 0 {
			args = append(args, k, fmt.Sprint(i))
			want.WriteString(bulk(fmt.Sprint(i)))
		} else {
			want.WriteString("$-1\r\n")
		}
	}
	c.send(resp(args...) + resp(get...))
	c.expect("+OK\r\n" + want.String())
	var served int
	for _, r := range rs {
		d := dial(t, r.Addr)
		n := d.do(resp("DBSIZE"))
		var k int
		fmt.Sscanf(n, ":%d", &k)
		if k == 0 {
			t.Errorf("redis %s holds no key: the keys were not spread", r.Addr)
		}
		served += k
	}
	if served < 3334 {
		t.Errorf("servers hold %d keys, want at least 3334", served)
	}

	// A protocol error gets an error reply, then the connection closes.
	c = dial(t, p.Addr("r"))
	c.send("*2\r\n$3\r\nGET\r\n:1\r\n")
	c.expect("-ERR Protocol error: expected '$', got ':'\r\n")
	if _, err := c.br.ReadByte(); err == nil {
		t.Fatal("connection still open after a protocol error")
	}
}

func TestRedisAuthAndDB(t *testing.T) {
	t.Parallel()
	rs := threeRedis(t, "--requirepass", "s3cret")
	p := startProxy(t, poolYAML("r", freeAddr(t), rs, "redis: true\nredis_auth: s3cret\nredis_db: 2"))
	c := dial(t, p.Addr("r"))
	c.send(resp("GET", "a"))
	c.expect("-NOAUTH Authentication required.\r\n")
	c.send(resp("AUTH", "wrong"))
	c.expect("-ERR invalid password\r\n")
	c.send(resp("AUTH", "s3cret") + resp("SET", "a", "1") + resp("GET", "a"))
	c.expect("+OK\r\n+OK\r\n" + bulk("1"))
	// The key went to database 2 of its server.
	found := 0
	for _, r := range rs {
		d := dial(t, r.Addr)
		d.send(resp("AUTH", "s3cret") + resp("SELECT", "2") + resp("EXISTS", "a"))
		d.expect("+OK\r\n+OK\r\n")
		if d.line() == ":1\r\n" {
			found++
		}
	}
	if found != 1 {
		t.Fatalf("key found in db 2 of %d servers, want 1", found)
	}
}
