// Package testredis runs a real redis-server for tests: a process of its
// own on a free loopback port, with no persistence, killed when the test
// ends. Without /usr/bin/redis-server (Debian's redis-server package) the
// test is skipped, unless the CI environment variable is set: then it
// fails, so CI never passes by skipping.
package testredis

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"

	"github.com/redis/go-redis/v9"
)

// Binary is the redis-server the tests run.
const Binary = "/usr/bin/redis-server"

// startTimeout is how long a server may take to accept connections.
const startTimeout = 10 * time.Second

// Server is one redis-server process. Kill and Start stop and restart it
// on the same port, for tests of Redis going away.
type Server struct {
	t       testing.TB
	Port    int
	cluster bool

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start runs a fresh redis-server on a free port and kills it in the
// test's Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server is needed (apt-get install redis-server): %v", err)
		}
		t.Skipf("redis-server not installed: %v", err)
	}
	s := &Server{t: t, Port: testkit.FreePort(t)}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// StartCluster runs a one-node Redis Cluster (cluster mode, all 16384
// slots on the one node): commands that mix hash slots fail there with
// CROSSSLOT as on a real cluster.
func StartCluster(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server is needed (apt-get install redis-server): %v", err)
		}
		t.Skipf("redis-server not installed: %v", err)
	}
	s := &Server{t: t, Port: testkit.FreePort(t), cluster: true}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// URL is the redis:// URL of the server's database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Start (re)starts the server on its port, empty, and waits until it
// answers PING.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("testredis: server already running")
	}
	args := []string{
		"--port", strconv.Itoa(s.Port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--loglevel", "warning",
	}
	if s.cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	}
	cmd := exec.Command(Binary, args...)
	cmd.Dir = s.t.TempDir()
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(startTimeout)
	for {
		if s.listening() && s.ping() && (!s.cluster || s.clusterReady()) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on port %d did not answer PING within %v", s.Port, startTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL and waits for it to exit. Killing a
// stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Client returns a go-redis client of the server, for checks the tests
// make beside the client under test (CLIENT LIST, TTLs); it is closed
// when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ping reports whether the server answers PING.
func (s *Server) ping() bool {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Ping(ctx).Err() == nil
}

// clusterReady gives the node every slot, and reports whether the
// cluster says it is ok.
func (s *Server) clusterReady() bool {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return false
	}
	if strings.Contains(info, "cluster_state:ok") {
		return true
	}
	if strings.Contains(info, "cluster_slots_assigned:0") {
		_ = c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err()
	}
	return false
}

// listening reports whether the server accepts TCP connections (checked
// before ping, so that go-redis does not log failed dials).
func (s *Server) listening() bool {
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// Pid is the running server's process ID, 0 while it is stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Pause stops the server with SIGSTOP: connections stay open and
// commands hang, as with a Redis that is overloaded or cut off.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}
