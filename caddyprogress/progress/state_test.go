package progress

import "testing"

// Every state's name parses back to it; a name that is none does not;
// the in-flight and final states are the ones the status documents and
// Redis treat as such.
func TestStateNamesRoundTrip(t *testing.T) {
	want := map[State]struct {
		name            string
		inFlight, final bool
	}{
		StatePending:    {"pending", false, false},
		StateUploading:  {"uploading", true, false},
		StateProcessing: {"processing", true, false},
		StatePaused:     {"paused", true, false},
		StateDelivering: {"delivering", true, false},
		StateComplete:   {"complete", false, true},
		StateError:      {"error", false, true},
		StateAborted:    {"aborted", false, true},
	}
	if len(want) != len(names) {
		t.Fatalf("%d states named, %d checked", len(names), len(want))
	}
	for st, w := range want {
		if st.String() != w.name || st.InFlight() != w.inFlight || st.Final() != w.final {
			t.Errorf("%d: %q in flight %v final %v, want %+v", st, st.String(), st.InFlight(), st.Final(), w)
		}
		if back, ok := ParseState(w.name); !ok || back != st {
			t.Errorf("ParseState(%q) = %v, %v", w.name, back, ok)
		}
	}
	for _, name := range []string{"", "Uploading", "unknown", "done"} {
		if st, ok := ParseState(name); ok {
			t.Errorf("ParseState(%q) = %v, want none", name, st)
		}
	}
	if s := State(42).String(); s != "unknown" {
		t.Errorf("State(42) is %q", s)
	}
}
