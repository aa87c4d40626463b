package caddyprogress

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/coder/websocket"
)

// discardConn is a connection that takes every write into nothing and
// whose reads wait until it is closed: a client that never sends.
type discardConn struct {
	closeOnce sync.Once
	closed    chan struct{}
}

func newDiscardConn() *discardConn { return &discardConn{closed: make(chan struct{})} }

func (c *discardConn) Read([]byte) (int, error) {
	<-c.closed
	return 0, net.ErrClosed
}
func (c *discardConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *discardConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}
func (c *discardConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *discardConn) SetDeadline(time.Time) error      { return nil }
func (c *discardConn) SetReadDeadline(time.Time) error  { return nil }
func (c *discardConn) SetWriteDeadline(time.Time) error { return nil }

// hijackable is a ResponseWriter whose connection is a discardConn, with
// the 4 KiB buffers Go's HTTP/1 server hands over on Hijack.
type hijackable struct {
	header http.Header
	conn   *discardConn
}

func (h *hijackable) Header() http.Header         { return h.header }
func (h *hijackable) Write(p []byte) (int, error) { return len(p), nil }
func (h *hijackable) WriteHeader(int)             {}
func (h *hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReaderSize(h.conn, 4<<10), bufio.NewWriterSize(h.conn, 4<<10)), nil
}

// benchWebSocket accepts a WebSocket over a discardConn and opens its
// stream, its reader running, as the route does.
func benchWebSocket(b *testing.B, h *Handler) *webSocketStream {
	r := httptest.NewRequest(http.MethodGet, DefaultWSPath+"bench", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	c, err := websocket.Accept(&hijackable{header: http.Header{}, conn: newDiscardConn()}, r, nil)
	if err != nil {
		b.Fatal(err)
	}
	return h.openWebSocket(c)
}

// 10,000 WebSocket subscribers, ten on each of 1,000 uploads, as
// BenchmarkEvents10000Subscribers for event streams: one interval tick
// per iteration. It reports the CPU time per message sent (framing and
// coder/websocket's write included, the network not), and the heap and
// goroutine stacks each socket holds between ticks.
func BenchmarkWebSocket10000Subscribers(b *testing.B) {
	const uploads, perUpload = 1000, 10
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &Handler{stopCtx: ctx, metrics: newHandlerMetrics("bench-ws"), writeTimeout: eventWriteTimeout, keepAliveEvery: keepAliveEvery}
	ups := make([]*upload, uploads)
	for i := range ups {
		ups[i] = newUpload(fmt.Sprintf("upload-%d", i), 1<<40, time.Now(), progress.StateUploading)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	streams := make([]*webSocketStream, 0, uploads*perUpload)
	subs := make([]*subscriber, 0, uploads*perUpload)
	for _, u := range ups {
		for range perUpload {
			s := benchWebSocket(b, h)
			streams = append(streams, s)
			subs = append(subs, newSubscriber(s, followRecord(record{live: u})))
		}
	}
	tick := func() {
		for _, u := range ups {
			u.addReceived(32 << 10)
		}
		for _, sub := range subs {
			if err := sub.progress(); err != nil {
				b.Fatal(err)
			}
		}
	}
	tick()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		tick()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(subs)), "ns/message")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(subs)), "heap-B/subscriber")
	b.ReportMetric(float64(after.StackInuse-before.StackInuse)/float64(len(subs)), "stack-B/subscriber")
	for _, s := range streams {
		s.failed = true // no closing handshake: the client never answers
		s.close()
	}
}
