// Package testkit holds the small pieces every test package here needs:
// deterministic upload bodies, their SHA-256 as the upstreams report it,
// and free loopback ports. It imports nothing beyond the standard
// library, so any test can use it without pulling in Caddy.
package testkit

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"net"
	"testing"
)

// Payload is size bytes of deterministic pseudo-random data; each seed
// gives other bytes.
func Payload(seed uint64, size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// SHA256Hex is b's SHA-256 in lower-case hex.
func SHA256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
