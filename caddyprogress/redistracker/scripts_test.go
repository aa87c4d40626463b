package redistracker

import (
	"fmt"
	"testing"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// The index scripts act on thousands of IDs in one call (past Lua's
// unpack limit), with one command per 1,000 arguments, and admission
// counts, evicts and refuses as it does one ID at a time.
func TestIndexScriptsTakeThousandsOfIDs(t *testing.T) {
	srv := testredis.Start(t)
	tr := newTestTracker(t, srv, Config{Instance: "a"})
	rc := srv.Client(t)
	idx := []string{tr.keys.live(), tr.keys.done()}
	ids := func(prefix string, n int) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s-%05d", prefix, i)
		}
		return out
	}
	admit := func(limit int, index string, list []any) (ok int, evicted map[string]bool) {
		t.Helper()
		res, err := admitScript.Run(bg(), rc, idx, append([]any{limit, index, 60000}, list...)...).Slice()
		if err != nil || len(res) != 2*len(list) {
			t.Fatalf("admit: %d results, %v", len(res), err)
		}
		evicted = map[string]bool{}
		for i := 0; i < len(res); i += 2 {
			if res[i].(int64) == 1 {
				ok++
			}
			if e := res[i+1].(string); e != "" {
				if evicted[e] {
					t.Fatalf("%s evicted twice", e)
				}
				evicted[e] = true
			}
		}
		return ok, evicted
	}
	card := func(key string) int64 { return rc.ZCard(bg(), key).Val() }

	old := ids("old", 3000)
	if ok, ev := admit(0, "done", old); ok != 3000 || len(ev) != 0 || card(idx[1]) != 3000 {
		t.Fatalf("3,000 into done: %d admitted, %d evicted, %d counted", ok, len(ev), card(idx[1]))
	}
	// the same IDs again: counted once
	if ok, _ := admit(3000, "done", old[:1500]); ok != 1500 || card(idx[1]) != 3000 {
		t.Fatalf("again: %d admitted, %d counted", ok, card(idx[1]))
	}
	// 1,500 new uploads with room for 500: 1,000 finished records evicted
	fresh := ids("new", 1500)
	ok, ev := admit(3500, "live", append(fresh, fresh[0])) // one twice: counted once
	if ok != 1501 || len(ev) != 1000 || card(idx[0]) != 1500 || card(idx[1]) != 2000 {
		t.Fatalf("1,500 live at 3,500: %d admitted, %d evicted, live %d, done %d", ok, len(ev), card(idx[0]), card(idx[1]))
	}
	for e := range ev {
		if e[:3] != "old" {
			t.Fatalf("evicted %s, not a finished record", e)
		}
	}
	// a limit reached with uploads in flight only: refused
	full := []string{tr.keys.live() + ":full", tr.keys.done() + ":full"}
	for _, want := range []int64{5, 0} {
		res, err := admitScript.Run(bg(), rc, full, append([]any{5, "live", 60000}, ids(fmt.Sprint(want), 5)...)...).Slice()
		if err != nil {
			t.Fatal(err)
		}
		var ok int64
		for i := 0; i < len(res); i += 2 {
			ok += res[i].(int64)
		}
		if ok != want {
			t.Fatalf("%d of 5 admitted at a limit of 5 with %d in flight, want %d", ok, rc.ZCard(bg(), full[0]).Val(), want)
		}
	}
	// a finished one claimed again moves to live, counted once
	if ok, _ := admit(3500, "live", old[2999:]); ok != 1 || card(idx[0]) != 1501 || card(idx[1]) != 1999 {
		t.Fatalf("re-claim: %d admitted, live %d, done %d", ok, card(idx[0]), card(idx[1]))
	}

	if err := touchScript.Run(bg(), rc, idx[:1], append([]any{5000, "update"}, append(fresh, ids("gone", 1000)...)...)...).Err(); err != nil {
		t.Fatal(err)
	}
	if card(idx[0]) != 1501 {
		t.Fatalf("an update added IDs: live %d", card(idx[0]))
	}
	if err := retireScript.Run(bg(), rc, idx, append([]any{60000}, fresh...)...).Err(); err != nil {
		t.Fatal(err)
	}
	if card(idx[0]) != 1 || card(idx[1]) != 3499 {
		t.Fatalf("after retiring 1,500: live %d, done %d", card(idx[0]), card(idx[1]))
	}
	if err := forgetScript.Run(bg(), rc, idx[:1], old...).Err(); err != nil || card(idx[0]) != 0 {
		t.Fatalf("forget: live %d, %v", card(idx[0]), err)
	}
}
