package resumable

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Requests bring route keys from their Host header: the spool keeps a
// route only while a delivery of that key is scheduled, so a client
// sending many hosts does not grow it.
func TestRoutesAreKeptOnlyWhileADeliveryNeedsThem(t *testing.T) {
	store, err := newFileStorage(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sp := newSpool(store, newLocalCoordinator(store))
	defer sp.Destruct()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	offer := func(host string) {
		sp.offerRoute(route{next: next, server: &caddyhttp.Server{}, key: routeKey{server: "srv0", host: host}})
	}
	for i := range 10000 {
		offer(fmt.Sprintf("host-%d.example", i))
	}
	if n := len(sp.routes); n != 0 {
		t.Fatalf("%d routes kept with no delivery scheduled, want 0", n)
	}

	needed := routeKey{server: "srv0", host: "x.example"}
	sp.needRoute(needed, 1)
	sp.needRoute(needed, 1)
	offer("x.example")
	offer("y.example")
	if len(sp.routes) != 1 || sp.awaitRoute(needed) == nil {
		t.Fatalf("routes with a delivery of x.example scheduled: %v, want x.example's only", sp.routes)
	}
	sp.needRoute(needed, -1)
	if len(sp.routes) != 1 {
		t.Fatalf("x.example's route went while a delivery still needs it")
	}
	sp.needRoute(needed, -1)
	if len(sp.routes) != 0 || len(sp.needs) != 0 {
		t.Fatalf("after the last delivery of x.example: routes %v, needs %v, want none", sp.routes, sp.needs)
	}
}
