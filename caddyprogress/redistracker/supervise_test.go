package redistracker

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A loop that panics does not take the process down: the panic is
// logged with its stack, the loop runs again a second later, and Close
// still waits for it and returns.
func TestPanickingLoopIsLoggedAndRunsAgain(t *testing.T) {
	srv := testredis.Start(t)
	core, logs := observer.New(zapcore.ErrorLevel)
	tr := newTestTracker(t, srv, Config{Logger: zap.New(core)})

	var runs atomic.Int32
	tr.loops.Add(1)
	go tr.supervise("test", func() {
		if runs.Add(1) == 1 {
			var m map[string]int
			m["boom"]++ // a nil map: the kind of bug a loop could have
		}
		<-tr.stop
	})
	waitFor(t, 10*time.Second, "the loop to run again after its panic", func() bool { return runs.Load() == 2 })
	entries := logs.FilterMessageSnippet("panicked").All()
	if len(entries) != 1 {
		t.Fatalf("%d panic lines logged, want 1", len(entries))
	}
	fields := entries[0].ContextMap()
	if fields["loop"] != "test" || !strings.Contains(fields["stack"].(string), "supervise_test.go") {
		t.Fatalf("the panic line: %v", fields)
	}
	closed := make(chan error, 1)
	go func() { closed <- tr.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: the supervised loop was not stopped")
	}
}
