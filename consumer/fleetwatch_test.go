package consumer

import (
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/internal/testenv"
)

// idleReplica is a runner on a relay that never runs: its fleet gate is
// fed by hand, as advisories and reads would feed it.
func idleReplica(t *testing.T) *runner {
	t.Helper()
	_, js := testenv.StartNATS(t).Connect(t)
	r, err := New(js, []Route{{Name: "r", Stream: "EVENTS", Durable: "agentrelay-r", Agent: tracingAgent{}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rn := r.runners[0]
	rn.fleet.enable("2.11.0")
	return rn
}

// A read of the consumer answered between another replica's ack of its
// probe and its resume, and taken in after the advisory of that resume
// (the lag loop reads apart from the fleet gate's loop), says "paused"
// with the ack floor already moved. Taken as news, it
// stopped this replica again, with nothing left to move the floor: an idle
// route stayed stopped, its alert firing, until traffic came back. The
// read is dropped; the next one tells the state as it is.
func TestAReplicaResumedByAnAdvisoryIsNotStoppedAgainByAnOlderRead(t *testing.T) {
	rn := idleReplica(t)
	f := rn.fleet
	until := autoPauseUntil(time.Now().Add(5*time.Second), conditionNotRunnable)
	stopped := func() bool { return rn.health.state(time.Now()).stopped() }

	f.advise(true, until)
	f.observe(true, until, false)
	if !stopped() {
		t.Fatal("another replica's pause did not stop this replica")
	}
	f.takeRead(f.beginRead(), true, until, 0)

	older := f.beginRead() // answered paused, after the other replica's ack...
	f.advise(false, time.Time{})
	f.observe(false, time.Time{}, true) // ...taken in after its resume's advisory
	f.sync()                            // and after the fleet gate's loop took up the resume
	if stopped() {
		t.Fatal("the advisory of the other replica's resume did not resume this replica")
	}
	f.takeRead(older, true, until, 1)
	if stopped() {
		t.Fatal("a read older than the resume's advisory stopped this replica again")
	}
	f.takeRead(f.beginRead(), false, time.Time{}, 1)
	if stopped() {
		t.Fatal("stopped after a read of the running consumer")
	}
}

// A read that no advisory overtook is news: a replica without the
// advisory permission learns of the pause from it, and resumes when the
// ack floor moves on past its value at the first read paused.
func TestAReadStopsAndResumesAReplicaThatHearsNoAdvisories(t *testing.T) {
	rn := idleReplica(t)
	f := rn.fleet
	until := autoPauseUntil(time.Now().Add(5*time.Second), conditionNotRunnable)
	stopped := func() bool { return rn.health.state(time.Now()).stopped() }

	f.takeRead(f.beginRead(), true, until, 3)
	if !stopped() {
		t.Fatal("a read of route health's pause did not stop this replica")
	}
	f.takeRead(f.beginRead(), false, time.Time{}, 3)
	if !stopped() {
		t.Fatal("resumed with the ack floor where it was when paused")
	}
	f.takeRead(f.beginRead(), false, time.Time{}, 4)
	if stopped() {
		t.Fatal("the ack floor moved on and this replica stayed stopped")
	}
}
