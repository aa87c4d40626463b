// Package testkit holds the small pieces every test package here needs:
// deterministic upload bodies, their SHA-256 as the upstreams report it,
// free loopback ports, a GET that outlives a config reload, and an
// event-stream reader. It imports nothing beyond the standard
// library, so any test can use it without pulling in Caddy.
package testkit

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"net"
	"net/http"
	"testing"
	"time"
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

// Get GETs url with client and, when that fails before any answer,
// tries again twice, 100ms apart, on new connections: a config reload
// closes the old server's connections, idle ones and one a request has
// just been written to, and resets new ones that reach its listener as
// it closes. An answer that never comes is still an error.
func Get(client *http.Client, url string) (*http.Response, error) {
	resp, err := client.Get(url)
	for try := 1; err != nil && try < 3; try++ {
		time.Sleep(100 * time.Millisecond)
		client.CloseIdleConnections()
		resp, err = client.Get(url)
	}
	return resp, err
}
