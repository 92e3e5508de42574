package rules

import (
	"testing"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// A restart between matches keeps the count, the cooldown and the ids
// already evaluated.
func TestSaveRestore(t *testing.T) {
	set := `{"rules":[{"id":"r1","event":{},"rate":{"count":3,"window":"60s","per":"RATE_SCOPE_DEVICE"},"cooldown":"600s",` + topicAction + `}]}`
	before, _, _ := newTestEngine(t, testConfig(), set)
	first, second := hit("a", 0), hit("a", 1)
	if fs := before.evaluateEvents([]*eventv1.Event{first, second}); len(fs) != 0 {
		t.Fatalf("2 of 3 matches fired %d times", len(fs))
	}
	b := before.Save()

	after, _, _ := newTestEngine(t, testConfig(), set)
	if err := after.Restore(b); err != nil {
		t.Fatal(err)
	}
	// Read again after the restart: not counted a second time.
	if fs := after.evaluateEvents([]*eventv1.Event{second}); len(fs) != 0 {
		t.Errorf("an event evaluated before the restart counted again: %d firings", len(fs))
	}
	if fs := after.evaluateEvents([]*eventv1.Event{hit("a", 2)}); len(fs) != 1 {
		t.Fatalf("the third match after the restart fired %d times, want 1 (the count was kept)", len(fs))
	}
	// The cooldown survives a second restart.
	again, _, _ := newTestEngine(t, testConfig(), set)
	if err := again.Restore(after.Save()); err != nil {
		t.Fatal(err)
	}
	if fs := again.evaluateEvents([]*eventv1.Event{hit("a", 3), hit("a", 4), hit("a", 5)}); len(fs) != 0 {
		t.Errorf("fired %d times within the cooldown after a restart", len(fs))
	}
	// A fresh engine without the state would have fired: the test can fail.
	fresh, _, _ := newTestEngine(t, testConfig(), set)
	if fs := fresh.evaluateEvents([]*eventv1.Event{hit("a", 3), hit("a", 4), hit("a", 5)}); len(fs) != 1 {
		t.Errorf("fresh engine: %d firings, want 1", len(fs))
	}
}

func TestRestoreRejectsGarbage(t *testing.T) {
	e, _, _ := newTestEngine(t, testConfig(), "")
	if err := e.Restore([]byte("not gob")); err == nil {
		t.Error("Restore accepted garbage")
	}
}

func TestIDSetOldestFirst(t *testing.T) {
	s := newIDSet(3)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		s.add(id)
	}
	got := s.oldestFirst()
	if len(got) != 3 || got[0] != "c" || got[1] != "d" || got[2] != "e" {
		t.Errorf("oldestFirst = %v, want [c d e]", got)
	}
}
