// Command upstream-repro shows, with Caddy alone (no upload_progress),
// that Caddy v2.11.9 keeps an HTTP/1.1 connection whose request body was
// left unread after an early answer, so that the rest of the body is
// parsed as the next request and answered 400 Bad Request. See README.md
// beside this file.
//
//	go run ./soak/upstream-repro            # default timeouts: the bug
//	go run ./soak/upstream-repro -idle-off  # read_body_idle -1s: no bug
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	rounds := flag.Int("n", 20, "requests per case")
	idleOff := flag.Bool("idle-off", false, "turn Caddy's read_body_idle timeout off (read_body_idle -1s)")
	flag.Parse()
	if err := run(*rounds, *idleOff); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(rounds int, idleOff bool) error {
	dir, err := os.MkdirTemp("", "upstream-repro")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Setenv("XDG_DATA_HOME", dir)
	os.Setenv("XDG_CONFIG_HOME", dir)

	early, err := listen(answerEarly)
	if err != nil {
		return err
	}
	reset, err := listen(resetAfter32KiB)
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	timeouts := ""
	if idleOff {
		timeouts = "\tservers {\n\t\ttimeouts {\n\t\t\tread_body_idle -1s\n\t\t}\n\t}\n"
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
%s}
http://127.0.0.1:%d {
	handle /next {
		respond "next ok" 200
	}
	handle /early/* {
		reverse_proxy %s
	}
	handle /reset/* {
		reverse_proxy %s
	}
}
`, timeouts, port, early.Addr(), reset.Addr())
	fmt.Printf("Caddy %s, Caddyfile:\n%s\n", caddyVersion(), caddyfile)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		return fmt.Errorf("adapting the Caddyfile: %w", err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		return fmt.Errorf("loading Caddy: %w", err)
	}
	defer caddy.Stop()

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for _, c := range []struct{ path, framing string }{
		{"/early/", "chunked"},
		{"/early/", "content-length"},
		{"/reset/", "chunked"},
		{"/reset/", "content-length"},
	} {
		counts := map[string]int{}
		for range rounds {
			first, second, err := twoRequests(addr, c.path, c.framing == "chunked")
			if err != nil {
				return err
			}
			counts[first+", then "+second]++
		}
		fmt.Printf("POST %s with a 1 MiB %s body, then GET /next on the same connection (answered by Caddy itself, 200 \"next ok\"):\n", c.path, c.framing)
		for outcome, n := range counts {
			fmt.Printf("\t%2d× %s\n", n, outcome)
		}
	}
	return nil
}

// twoRequests sends a POST with a 1 MiB body, then a GET, on one
// connection, as a keep-alive client that sends its whole request
// before reading the answer does, and reports both answers.
func twoRequests(addr, path string, chunked bool) (first, second string, err error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	body := []byte(strings.Repeat("not a request line\r\n", 1<<20/20))
	go func() {
		if chunked {
			fmt.Fprintf(conn, "POST %sup HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", path, len(body))
		} else {
			fmt.Fprintf(conn, "POST %sup HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n", path, len(body))
		}
		conn.Write(body)
		if chunked {
			io.WriteString(conn, "\r\n0\r\n\r\n")
		}
		io.WriteString(conn, "GET /next HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	}()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "no answer", "-", nil
	}
	io.Copy(io.Discard, resp.Body)
	first = resp.Status
	if resp.Close {
		first += " (Connection: close)"
	}
	resp2, err := http.ReadResponse(r, nil)
	if err != nil {
		return first, "connection closed", nil
	}
	io.Copy(io.Discard, resp2.Body)
	return first, resp2.Status, nil
}

// listen serves each connection of a new loopback listener with serve.
func listen(serve func(net.Conn)) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln, nil
}

// answerEarly reads a request's header and answers 200 at once, without
// reading the body, then keeps the connection open a while, like a busy
// backend.
func answerEarly(c net.Conn) {
	defer c.Close()
	if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
		return
	}
	io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	time.Sleep(2 * time.Second)
}

// resetAfter32KiB reads 32 KiB of a request's body and resets the
// connection.
func resetAfter32KiB(c net.Conn) {
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		c.Close()
		return
	}
	io.CopyN(io.Discard, req.Body, 32<<10)
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// caddyVersion is the version of the Caddy module this was built with.
func caddyVersion() string {
	full, _ := caddy.Version()
	return full
}
