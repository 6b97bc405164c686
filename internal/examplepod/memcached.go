package examplepod

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"time"
)

// MemcachedSet stores key=value directly on the memcached server at addr
// (one shard, bypassing the ambassador), within 5 seconds.
func MemcachedSet(addr, key, value string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "set %s 0 0 %d\r\n%s\r\n", key, len(value), value); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "STORED\r\n" {
		return fmt.Errorf("memcached %s answered %q to set %s", addr, line, key)
	}
	return nil
}

// MemcachedGet reads key from the memcached server at addr, within 5
// seconds; found is false on a miss.
func MemcachedGet(addr, key string) (value string, found bool, err error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "get %s\r\n", key); err != nil {
		return "", false, err
	}
	rd := bufio.NewReader(c)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", false, err
	}
	if line == "END\r\n" {
		return "", false, nil
	}
	var k string
	var flags, n int
	if _, err := fmt.Sscanf(line, "VALUE %s %d %d\r\n", &k, &flags, &n); err != nil || k != key || n < 0 || n > 1<<20 {
		return "", false, fmt.Errorf("memcached %s answered %q to get %s", addr, line, key)
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(rd, b); err != nil {
		return "", false, err
	}
	if end, err := rd.ReadString('\n'); err != nil || end != "END\r\n" {
		return "", false, fmt.Errorf("memcached %s: no END after the value of %s (%q, %v)", addr, key, end, err)
	}
	return string(b[:n]), true, nil
}
