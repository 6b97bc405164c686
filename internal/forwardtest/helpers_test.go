package forwardtest

import (
	"bytes"
	"compress/gzip"
	"net"
	"testing"

	"github.com/tinylib/msgp/msgp"
)

func chunkOpt(b []byte, chunk, compressed string) []byte {
	n := uint32(1)
	if compressed != "" {
		n = 2
	}
	b = msgp.AppendMapHeader(b, n)
	b = msgp.AppendString(b, "chunk")
	b = msgp.AppendString(b, chunk)
	if compressed != "" {
		b = msgp.AppendString(b, "compressed")
		b = msgp.AppendString(b, compressed)
	}
	return b
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
