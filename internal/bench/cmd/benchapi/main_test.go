package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, base, id, key string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/workspace_agents/"+id+"/trigger", strings.NewReader(`{"input":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func getStats(t *testing.T, base string) stats {
	t.Helper()
	resp, err := http.Get(base + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A conflicting id is answered 409 after the same delay as a 202, and its
// calls are counted apart from the accepted ones, with the times its probes
// are judged by.
func TestConflictingIDsAreAnswered409AndCountedApart(t *testing.T) {
	ids := conflictList{}
	if err := ids.Set("agtch_off, agtch_gone"); err != nil {
		t.Fatal(err)
	}
	const latency = 20 * time.Millisecond
	srv := httptest.NewServer(newCounts(ids).handler(latency))
	defer srv.Close()

	start := time.Now()
	if code := post(t, srv.URL, "agtch_off", "k1"); code != http.StatusConflict {
		t.Errorf("agtch_off answered %d, want 409", code)
	}
	if d := time.Since(start); d < latency {
		t.Errorf("409 after %v, want after the latency %v", d, latency)
	}
	for _, key := range []string{"k2", "k2", "k3"} {
		if code := post(t, srv.URL, "agtch_on", key); code != http.StatusAccepted {
			t.Errorf("agtch_on answered %d, want 202", code)
		}
	}
	if code := post(t, srv.URL, "agtch_off", "k1"); code != http.StatusConflict {
		t.Errorf("agtch_off answered %d the second time, want 409", code)
	}

	s := getStats(t, srv.URL)
	if s.Calls != 3 || s.Keys != 2 {
		t.Errorf("accepted: %d calls, %d keys; want 3 and 2 (the 409s apart)", s.Calls, s.Keys)
	}
	off := s.Conflicts["agtch_off"]
	if off == nil || off.Calls != 2 || off.Keys != 1 || off.BeforeFirstAnswer != 1 {
		t.Fatalf("agtch_off: %+v; want 2 calls, 1 key, 1 before its first answer", off)
	}
	if !off.FirstCall.Before(off.FirstAnswer) || !off.FirstAnswer.Before(off.LastCall) {
		t.Errorf("agtch_off: first call %v, first answer %v, last call %v: want them in that order", off.FirstCall, off.FirstAnswer, off.LastCall)
	}
	if gone := s.Conflicts["agtch_gone"]; gone == nil || gone.Calls != 0 {
		t.Errorf("agtch_gone: %+v; want listed with no calls", gone)
	}

	resp, err := http.Post(srv.URL+"/reset", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s := getStats(t, srv.URL); s.Calls != 0 || s.Keys != 0 || s.Conflicts["agtch_off"].Calls != 0 || !s.Conflicts["agtch_off"].FirstAnswer.IsZero() {
		t.Errorf("after reset: %+v, agtch_off %+v; want nothing counted", s, s.Conflicts["agtch_off"])
	}
}

func TestConflictListRefusesWhatIsNotAnID(t *testing.T) {
	for _, v := range []string{"", "agtch_a,,agtch_b", "agtch_a/../x"} {
		if err := (conflictList{}).Set(v); err == nil {
			t.Errorf("-conflict %q accepted", v)
		}
	}
}
