package testredis

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Monitor counts the commands the server runs, by the name of the
// client connection that sent them (CLIENT SETNAME, or go-redis's
// client_name URL parameter), through MONITOR. The commands a Lua
// script runs count for the client that called the script, as Redis's
// total_commands_processed counts them. Counts reads them up to a
// marker the monitor itself sends, so they are ordered by events: every
// command Redis ran before Counts was called is in them.
type Monitor struct {
	t    testing.TB
	s    *Server
	conn net.Conn // MONITOR
	ctl  net.Conn // CLIENT LIST and markers
	ctlR *bufio.Reader

	ctlMu sync.Mutex // orders the calls on ctl

	mu      sync.Mutex
	names   map[string]string // client address -> name
	counts  map[string]int    // client name -> commands
	calls   map[string]int    // client name -> commands it sent (a script's own not counted)
	recent  map[string][]string
	marks   map[string]chan struct{}
	lastBy  string // the name of the client of the last command (for a script's own)
	readErr error
	done    chan struct{}
	markSeq int
}

// monitorName is the name of the monitor's own control connection.
const monitorName = "testredis-monitor"

// Monitor starts counting the server's commands until the test ends.
func (s *Server) Monitor(t testing.TB) *Monitor {
	t.Helper()
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatalf("monitor: %v", err)
	}
	ctl, err := net.Dial("tcp", s.Addr())
	if err != nil {
		_ = conn.Close()
		t.Fatalf("monitor: %v", err)
	}
	m := &Monitor{t: t, s: s, conn: conn, ctl: ctl, ctlR: bufio.NewReader(ctl), names: map[string]string{}, counts: map[string]int{}, calls: map[string]int{},
		recent: map[string][]string{}, marks: map[string]chan struct{}{}, done: make(chan struct{})}
	if _, err := m.call("CLIENT", "SETNAME", monitorName); err != nil {
		t.Fatalf("monitor: %v", err)
	}
	r := bufio.NewReader(conn)
	if _, err := fmt.Fprint(conn, "MONITOR\r\n"); err != nil {
		t.Fatalf("monitor: %v", err)
	}
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
		t.Fatalf("monitor: %q %v", line, err)
	}
	go m.read(r)
	t.Cleanup(func() {
		_ = conn.Close()
		_ = ctl.Close()
		<-m.done
	})
	return m
}

// read counts the lines of MONITOR: `+<time> [<db> <addr>] "<cmd>" ...`.
func (m *Monitor) read(r *bufio.Reader) {
	defer close(m.done)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			m.mu.Lock()
			m.readErr = err
			for _, c := range m.marks {
				close(c)
			}
			clear(m.marks)
			m.mu.Unlock()
			return
		}
		_, rest, ok := strings.Cut(line, "[")
		if !ok {
			continue
		}
		src, cmd, _ := strings.Cut(rest, "] ")
		_, addr, _ := strings.Cut(src, " ")
		cmd = strings.TrimSpace(cmd)
		m.count(addr, cmd)
	}
}

func (m *Monitor) count(addr, cmd string) {
	name := ""
	if addr == "lua" {
		m.mu.Lock()
		name = m.lastBy
		m.mu.Unlock()
	} else {
		name = m.nameOf(addr, cmd)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if addr != "lua" {
		m.lastBy = name
	}
	if name == monitorName {
		if mark, ok := strings.CutPrefix(cmd, `"ECHO" "`); ok {
			mark = strings.TrimSuffix(mark, `"`)
			if c := m.marks[mark]; c != nil {
				close(c)
				delete(m.marks, mark)
			}
		}
		return
	}
	m.counts[name]++
	if addr != "lua" {
		m.calls[name]++
	}
	r := append(m.recent[name], cmd)
	if len(r) > 20 {
		r = r[len(r)-20:]
	}
	m.recent[name] = r
}

// nameOf is the client name of addr: from CLIENT LIST the first time,
// or from the HELLO ... SETNAME that opens a go-redis connection.
func (m *Monitor) nameOf(addr, cmd string) string {
	m.mu.Lock()
	name, ok := m.names[addr]
	m.mu.Unlock()
	if ok {
		return name
	}
	lower := strings.ToLower(cmd)
	if strings.HasPrefix(lower, `"hello"`) || strings.HasPrefix(lower, `"client" "setname"`) {
		f := strings.Fields(cmd)
		for i, a := range f {
			if strings.EqualFold(a, `"setname"`) && i+1 < len(f) {
				name, _ = strconv.Unquote(f[i+1])
			}
		}
	}
	if name == "" {
		name = m.listName(addr)
	}
	m.mu.Lock()
	m.names[addr] = name
	m.mu.Unlock()
	return name
}

// listName looks addr up in CLIENT LIST ("?" if it is gone).
func (m *Monitor) listName(addr string) string {
	list, err := m.call("CLIENT", "LIST")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(line, " addr="+addr+" ") {
			continue
		}
		_, rest, _ := strings.Cut(line, " name=")
		name, _, _ := strings.Cut(rest, " ")
		return name
	}
	return "?"
}

// call sends one command on the control connection and returns its
// simple, bulk or error reply as text.
func (m *Monitor) call(args ...string) (string, error) {
	m.ctlMu.Lock()
	defer m.ctlMu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	_ = m.ctl.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := m.ctl.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := m.ctlR
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	switch line[0] {
	case '+':
		return strings.TrimSpace(line[1:]), nil
	case '-':
		return "", fmt.Errorf("redis: %s", strings.TrimSpace(line[1:]))
	case '$':
		n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("redis: unexpected reply %q", line)
}

// Counts returns how many commands each client name has sent so far:
// every command Redis ran before the call is counted.
func (m *Monitor) Counts() map[string]int {
	m.t.Helper()
	m.mu.Lock()
	m.markSeq++
	mark := "mark-" + strconv.Itoa(m.markSeq)
	c := make(chan struct{})
	m.marks[mark] = c
	m.mu.Unlock()
	if _, err := m.call("ECHO", mark); err != nil {
		m.t.Fatalf("monitor: %v", err)
	}
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		m.t.Fatalf("monitor: marker not seen within 10s")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readErr != nil {
		m.t.Fatalf("monitor: %v", m.readErr)
	}
	out := make(map[string]int, len(m.counts))
	for k, v := range m.counts {
		out[k] = v
	}
	return out
}

// Calls returns how many commands each client name has sent so far, a
// script call counting once (its own commands not counted): as Counts,
// every command Redis ran before the call is in them. Without
// pipelines, each is a round trip.
func (m *Monitor) Calls() map[string]int {
	m.t.Helper()
	m.Counts() // waits for the marker
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int, len(m.calls))
	for k, v := range m.calls {
		out[k] = v
	}
	return out
}

// Recent returns the last commands (at most 20) a client name sent.
func (m *Monitor) Recent(name string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.recent[name]...)
}

// WaitQuiet waits until the client name has sent no command for quiet,
// or limit passes; it reports whether it did.
func (m *Monitor) WaitQuiet(name string, quiet, limit time.Duration) bool {
	m.t.Helper()
	deadline := time.Now().Add(limit)
	last := m.Counts()[name]
	for time.Now().Before(deadline) {
		time.Sleep(quiet)
		n := m.Counts()[name]
		if n == last {
			return true
		}
		last = n
	}
	return false
}

// ExpectSilent fails t unless each client named sends no command for
// window (when says at which point of the test, for the message); it
// logs the ones that stayed silent.
func (m *Monitor) ExpectSilent(t testing.TB, window time.Duration, when string, names ...string) {
	t.Helper()
	before := m.Counts()
	time.Sleep(window)
	after := m.Counts()
	for _, name := range names {
		if n := after[name] - before[name]; n != 0 {
			t.Errorf("%s: %s sent %d commands in %v (%.1f/s); last: %q",
				when, name, n, window, float64(n)/window.Seconds(), m.Recent(name))
		} else {
			t.Logf("%s: %s sent no command in %v", when, name, window)
		}
	}
}
