package ship

import (
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net"

	"github.com/tinylib/msgp/msgp"
)

// clientHandshake answers the server's HELO with PING and checks its PONG
// (forward protocol v1, shared_key authentication).
func clientHandshake(conn net.Conn, hostname, sharedKey, user, password string) error {
	r := msgp.NewReader(conn)
	n, err := r.ReadArrayHeader()
	if err != nil {
		return fmt.Errorf("read HELO: %w", err)
	}
	kind, err := r.ReadString()
	if err != nil || kind != "HELO" || n != 2 {
		return fmt.Errorf("expected HELO, got %q", kind)
	}
	opts, err := r.ReadIntf()
	if err != nil {
		return fmt.Errorf("read HELO options: %w", err)
	}
	m, _ := opts.(map[string]any)
	nonce, authSalt := asBytes(m["nonce"]), asBytes(m["auth"])
	var saltb [16]byte
	rand.Read(saltb[:])
	salt := hex.EncodeToString(saltb[:])
	passDigest := ""
	if len(authSalt) > 0 {
		passDigest = sha512Hex(string(authSalt), user, password)
	}
	var w []byte
	w = msgp.AppendArrayHeader(w, 6)
	w = msgp.AppendString(w, "PING")
	w = msgp.AppendString(w, hostname)
	w = msgp.AppendString(w, salt)
	w = msgp.AppendString(w, sha512Hex(salt, hostname, string(nonce), sharedKey))
	w = msgp.AppendString(w, user)
	w = msgp.AppendString(w, passDigest)
	if _, err := conn.Write(w); err != nil {
		return fmt.Errorf("write PING: %w", err)
	}
	n, err = r.ReadArrayHeader()
	if err != nil {
		return fmt.Errorf("read PONG: %w", err)
	}
	if n != 5 {
		return fmt.Errorf("PONG has %d elements, want 5", n)
	}
	kind, _ = r.ReadString()
	ok, err := r.ReadBool()
	if err != nil || kind != "PONG" {
		return errors.New("expected PONG")
	}
	reason, _ := r.ReadString()
	serverHost, _ := r.ReadString()
	digest, err := r.ReadString()
	if err != nil {
		return fmt.Errorf("read PONG: %w", err)
	}
	if !ok {
		return fmt.Errorf("server refused authentication: %s (check -forward-shared-key)", reason)
	}
	if digest != sha512Hex(salt, serverHost, string(nonce), sharedKey) {
		return errors.New("server's shared key digest does not match: check -forward-shared-key")
	}
	return nil
}

func asBytes(v any) []byte {
	switch v := v.(type) {
	case []byte:
		return v
	case string:
		return []byte(v)
	}
	return nil
}

func sha512Hex(parts ...string) string {
	h := sha512.New()
	for _, p := range parts {
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}
