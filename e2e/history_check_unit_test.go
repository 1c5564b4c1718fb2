package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// cleanHistory is a hand-made history that keeps every invariant: two
// uploads of one key, the first superseded, the second succeeded after a
// kill -9 interrupted its first attempt.
func cleanHistory() *history {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	v1 := histVersion{Key: "k/a.txt", VersionID: "v1", ETag: "e1", SHA256: "s1"}
	v2 := histVersion{Key: "k/a.txt", VersionID: "v2", ETag: "e2", SHA256: "s2"}
	j1, j2 := jobID(v1.Key, v1.VersionID, v1.ETag), jobID(v2.Key, v2.VersionID, v2.ETag)
	return &history{
		Uploads: []histUpload{{v1, at(0)}, {v2, at(1)}},
		Latest:  map[string]histVersion{v2.Key: v2},
		Records: map[string]*job.Record{
			j1: {ID: j1, Key: v1.Key, VersionID: "v1", ETag: "e1", State: stateSuperseded},
			j2: {ID: j2, Key: v2.Key, VersionID: "v2", ETag: "e2", State: job.Succeeded, Attempts: []job.Attempt{
				{Number: 1, Owner: "vol-a", StartedAt: at(2), FinishedAt: at(6), Error: "worker stopped unexpectedly"},
				{Number: 2, Owner: "vol-a", StartedAt: at(6), FinishedAt: at(8)},
			}},
		},
		Outputs: map[string][]histOutput{v2.Key: {{
			Key:      v2.Key + "/result.txt",
			Metadata: map[string]string{metaJob: j2, metaInputVersion: "v2"},
			Body:     []byte(resultText(j2, "s2")),
		}}},
		Runs: []procRun{
			{Job: j2, PID: 100, PPID: 10, Start: at(2.1), Gone: at(3.2)},
			{Job: j2, PID: 200, PPID: 20, Start: at(6.1), End: at(7.5)},
		},
		Workers: []workerProc{
			{Kind: "up", PID: 10, VolumeID: "vol-a", Start: at(0), Death: at(3), How: howKill9},
			{Kind: "up", PID: 20, VolumeID: "vol-a", Start: at(5)},
			{Kind: "clone", PID: 30, VolumeID: "vol-b", Start: at(4), Death: at(4.5), How: howExit},
		},
		DeathBound: 3 * time.Second,
	}
}

func TestHistoryCheckerPassesCleanHistory(t *testing.T) {
	t.Parallel()
	if vs := checkHistory(cleanHistory()); len(vs) != 0 {
		t.Fatalf("violations in a clean history: %v", vs)
	}
}

// Each planted fault must be reported, by the invariant it breaks.
func TestHistoryCheckerCatchesPlantedViolations(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		plant     func(h *history)
		invariant int
		says      string
	}{
		{"upload without record", func(h *history) {
			h.Uploads = append(h.Uploads, histUpload{histVersion: histVersion{Key: "k/b", VersionID: "v9"}})
		}, 1, "has no job record"},
		{"record left running", func(h *history) {
			h.Records[firstID(h, "v1")].State = job.Running
		}, 1, "is running once quiet"},
		{"output of an older version", func(h *history) {
			o := &h.Outputs["k/a.txt"][0]
			o.Metadata[metaJob] = firstID(h, "v1")
		}, 2, "want the latest version's job"},
		{"stale result", func(h *history) {
			h.Outputs["k/a.txt"][0].Body = []byte(resultText(firstID(h, "v1"), "s1"))
		}, 2, "result.txt"},
		{"overlapping runs", func(h *history) {
			h.Runs[1].Start = h.Runs[0].Start.Add(500 * time.Millisecond)
		}, 4, "runs overlap"},
		{"processor outlives its worker", func(h *history) {
			h.Runs[0].Gone = h.Workers[0].Death.Add(10 * time.Second)
		}, 4, "outlived its worker"},
		{"dead job", func(h *history) {
			h.Records[firstID(h, "v1")].State = job.Dead
		}, 5, "is dead"},
		{"crash cause without a kill", func(h *history) {
			h.Workers[0].How = howTerm
		}, 5, "SIGTERM"},
		{"attempt without an error", func(h *history) {
			h.Records[firstID(h, "v2")].Attempts[0].Error = ""
		}, 5, "without an error"},
		{"failure nothing explains", func(h *history) {
			h.Records[firstID(h, "v2")].Attempts[0].Error = "exit status 1"
			h.Workers[0].Death = h.Workers[0].Death.Add(-time.Minute)
		}, 5, "no worker nor the S3 server stopped"},
		{"clone with the original's identity", func(h *history) {
			h.Workers[2].VolumeID = "vol-a"
		}, 4, "identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := cleanHistory()
			tc.plant(h)
			vs := checkHistory(h)
			for _, v := range vs {
				if v.Invariant == tc.invariant && strings.Contains(v.Msg, tc.says) {
					return
				}
			}
			t.Fatalf("planted %q: no invariant-%d violation saying %q among %v", tc.name, tc.invariant, tc.says, vs)
		})
	}
}

func firstID(h *history, version string) string {
	for id, r := range h.Records {
		if r.VersionID == version {
			return id
		}
	}
	panic("no record of version " + version)
}

// A clone worker that cannot renew its lease because the S3 server it
// talks to was killed stops, exits 1, and its attempt ends as "worker
// stopped unexpectedly (its lease lapsed)": a stop of the worker, as a
// kill -9 is, and no violation. The same exit with the server up all
// along is one.
func TestHistoryCheckerLeaseLapsedWithTheServer(t *testing.T) {
	t.Parallel()
	clone := func() *history {
		h := cleanHistory()
		a := &h.Records[firstID(h, "v2")].Attempts[0]
		a.Owner = "vol-b/n1" // the clone's, which exits 1 at 4.5
		a.Error = "worker stopped unexpectedly (its lease lapsed)"
		return h
	}
	h := clone()
	if vs := checkHistory(h); len(vs) != 0 {
		t.Fatalf("a clone's lease lapsed while the server was killed -9: %v", vs)
	}
	h = clone()
	for i := range h.Workers {
		if h.Workers[i].Kind == "up" && !h.Workers[i].Death.IsZero() {
			h.Workers[i].Death = h.Workers[i].Death.Add(-time.Minute)
		}
	}
	vs := checkHistory(h)
	for _, v := range vs {
		if v.Invariant == 5 && strings.Contains(v.Msg, "no worker was killed -9") {
			return
		}
	}
	t.Fatalf("a clone's lease lapsed with the server up all along: no invariant-5 violation among %v", vs)
}
