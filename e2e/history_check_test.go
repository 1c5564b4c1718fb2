package e2e

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// history is everything TestHistory observed: what the clients were told,
// what the processes did and what the pipeline left behind. The checks
// below are pure functions of it, so a hand-made history tests them.
type history struct {
	Uploads []histUpload           // acknowledged uploads, in acknowledgement order
	Latest  map[string]histVersion // key -> the version the input bucket holds once quiet
	Records map[string]*job.Record // job ID -> record, once quiet
	Outputs map[string][]histOutput
	Runs    []procRun    // processor runs, from the journal and the pid watcher
	Workers []workerProc // every `conveyor up` and clone `conveyor worker run`
	// DeathBound is how long a processor may outlive its worker.
	DeathBound time.Duration
}

// histVersion names one object version of the input bucket.
type histVersion struct {
	Key       string
	VersionID string // empty when the server gave none
	ETag      string // without quotes
	SHA256    string // of the content
}

// histUpload is one acknowledged PutObject.
type histUpload struct {
	histVersion
	At time.Time // when the response arrived
}

// histOutput is one object under <key>/ in the output bucket.
type histOutput struct {
	Key      string
	Metadata map[string]string // user metadata, lower-case names
	Body     []byte
}

// procRun is one run of the journal processor.
type procRun struct {
	Job   string
	PID   int
	PPID  int
	Start time.Time
	End   time.Time // from its end line; zero when it wrote none
	Gone  time.Time // when the pid watcher saw it gone; zero if never
}

// until is when the run stopped: its end line, else when it was seen
// gone, else never (the zero time means "still running").
func (r procRun) until() time.Time {
	if !r.End.IsZero() {
		return r.End
	}
	return r.Gone
}

// workerProc is one process that runs processors: `conveyor up` or a
// `conveyor worker run` on the clone volume.
type workerProc struct {
	Kind     string // "up" or "clone"
	PID      int
	VolumeID string // owner name its attempts carry
	Job      string // the job a clone worker was asked to run
	Start    time.Time
	Signaled time.Time // when the test sent the signal that ended it; zero if none
	Death    time.Time // when its pid was gone; zero while alive
	How      string    // howKill9, howTerm or howExit
}

// stopping is when the process began to stop: the signal, else its death.
func (w workerProc) stopping() time.Time {
	if !w.Signaled.IsZero() {
		return w.Signaled
	}
	return w.Death
}

// How a worker process ended.
const (
	howKill9 = "kill -9"
	howTerm  = "SIGTERM"
	howExit  = "exited"
)

// Terminal states of the job contract; superseded is the new core's.
const stateSuperseded job.State = "superseded"

// Metadata every output carries under the job contract.
const (
	metaJob          = "conveyor-job"
	metaInputVersion = "conveyor-input-version"
)

// violation is one broken invariant, with what it is about.
type violation struct {
	Invariant int
	Msg       string
}

func (v violation) String() string { return fmt.Sprintf("invariant %d: %s", v.Invariant, v.Msg) }

// checkHistory runs every check and returns all violations.
func checkHistory(h *history) []violation {
	var vs []violation
	for _, c := range []func(*history) []violation{
		checkOneTerminalRecord,
		checkOutputsOfLatest,
		checkNoOverlappingRuns,
		checkNoOrphanProcessors,
		checkNoDeadJobs,
		checkAttemptsAreFailures,
		checkCloneIdentity,
	} {
		vs = append(vs, c(h)...)
	}
	return vs
}

// matches reports whether a record describes the object version v: same
// key and version ID, or same ETag when the server gave no version ID.
func matches(r *job.Record, v histVersion) bool {
	if r.Key != v.Key {
		return false
	}
	if v.VersionID != "" {
		return r.VersionID == v.VersionID
	}
	return r.VersionID == "" && strings.Trim(r.ETag, `"`) == v.ETag
}

func (v histVersion) String() string {
	if v.VersionID != "" {
		return fmt.Sprintf("%q version %s", v.Key, v.VersionID)
	}
	return fmt.Sprintf("%q etag %s (no version ID)", v.Key, v.ETag)
}

// recordsOf returns the records of version v, sorted by ID.
func (h *history) recordsOf(v histVersion) []*job.Record {
	var rs []*job.Record
	for _, r := range h.Records {
		if matches(r, v) {
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].ID < rs[j].ID })
	return rs
}

// checkOneTerminalRecord: every acknowledged upload has exactly one record,
// and it is succeeded, dead or superseded (invariant 1).
func checkOneTerminalRecord(h *history) []violation {
	var vs []violation
	seen := map[histVersion]bool{}
	for _, u := range h.Uploads {
		if seen[u.histVersion] {
			continue
		}
		seen[u.histVersion] = true
		rs := h.recordsOf(u.histVersion)
		switch {
		case len(rs) == 0:
			vs = append(vs, violation{1, fmt.Sprintf("upload %s acknowledged at %s has no job record", u.histVersion, u.At.Format(tsFormat))})
		case len(rs) > 1:
			var ids []string
			for _, r := range rs {
				ids = append(ids, r.ID+":"+string(r.State))
			}
			vs = append(vs, violation{1, fmt.Sprintf("upload %s has %d records %v, want one", u.histVersion, len(rs), ids)})
		}
		for _, r := range rs {
			switch r.State {
			case job.Succeeded, job.Dead, stateSuperseded:
			default:
				vs = append(vs, violation{1, fmt.Sprintf("upload %s: job %s is %s once quiet, want succeeded, dead or superseded", u.histVersion, r.ID, r.State)})
			}
		}
	}
	return vs
}

// checkOutputsOfLatest: under <key>/ are the outputs of the key's latest
// version only, each naming its job and input version, from a succeeded
// job whose result names that job and content (invariant 2).
func checkOutputsOfLatest(h *history) []violation {
	var vs []violation
	keys := make([]string, 0, len(h.Latest))
	for k := range h.Latest {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		v := h.Latest[key]
		rs := h.recordsOf(v)
		if len(rs) != 1 {
			vs = append(vs, violation{2, fmt.Sprintf("latest %s has %d records, cannot tell whose outputs belong", v, len(rs))})
			continue
		}
		r := rs[0]
		if r.State != job.Succeeded {
			vs = append(vs, violation{2, fmt.Sprintf("latest %s: job %s is %s, want succeeded", v, r.ID, r.State)})
		}
		outs := h.Outputs[key]
		if len(outs) == 0 {
			vs = append(vs, violation{2, fmt.Sprintf("latest %s (job %s): no output under %q", v, r.ID, key+"/")})
		}
		sawResult := false
		for _, o := range outs {
			if got := o.Metadata[metaJob]; got != r.ID {
				vs = append(vs, violation{2, fmt.Sprintf("output %q: %s=%q, want the latest version's job %s (%s)", o.Key, metaJob, got, r.ID, whose(h, got))})
			}
			switch got := o.Metadata[metaInputVersion]; {
			case v.VersionID == "":
				vs = append(vs, violation{2, fmt.Sprintf("output %q: %s=%q, and the input bucket gave no version ID for %q: it is not versioned", o.Key, metaInputVersion, got, key)})
			case got != v.VersionID:
				vs = append(vs, violation{2, fmt.Sprintf("output %q: %s=%q, want the latest version %q", o.Key, metaInputVersion, got, v.VersionID)})
			}
			if strings.HasSuffix(o.Key, "/result.txt") {
				sawResult = true
				want := resultText(r.ID, v.SHA256)
				if string(o.Body) != want {
					vs = append(vs, violation{2, fmt.Sprintf("output %q says %q, want %q (latest %s)", o.Key, strings.TrimSpace(string(o.Body)), strings.TrimSpace(want), v)})
				}
			}
		}
		if len(outs) > 0 && !sawResult {
			vs = append(vs, violation{2, fmt.Sprintf("latest %s: no result.txt among %d outputs", v, len(outs))})
		}
	}
	return vs
}

// whose names the record of job id, for messages.
func whose(h *history, id string) string {
	r := h.Records[id]
	if r == nil {
		return "no such job"
	}
	return fmt.Sprintf("that is job of version %q etag %s, %s", r.VersionID, r.ETag, r.State)
}

// resultText is what the journal processor writes to result.txt.
func resultText(jobID, sha string) string {
	return fmt.Sprintf("job %s\nsha256 %s\n", jobID, sha)
}

// checkNoOverlappingRuns: two processor runs of one job never overlap
// (invariant 4).
func checkNoOverlappingRuns(h *history) []violation {
	var vs []violation
	byJob := map[string][]procRun{}
	for _, r := range h.Runs {
		byJob[r.Job] = append(byJob[r.Job], r)
	}
	ids := make([]string, 0, len(byJob))
	for id := range byJob {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		runs := byJob[id]
		sort.Slice(runs, func(i, j int) bool { return runs[i].Start.Before(runs[j].Start) })
		for i := range runs {
			for j := i + 1; j < len(runs); j++ {
				a, b := runs[i], runs[j]
				if end := a.until(); end.IsZero() || b.Start.Before(end) {
					vs = append(vs, violation{4, fmt.Sprintf("job %s (%s): processor runs overlap: pid %d (ppid %d) %s and pid %d (ppid %d) %s",
						id, jobKey(h, id), a.PID, a.PPID, a.span(), b.PID, b.PPID, b.span())})
				}
			}
		}
	}
	return vs
}

func (r procRun) span() string {
	end := "still running"
	switch {
	case !r.End.IsZero():
		end = r.End.Format(tsFormat)
	case !r.Gone.IsZero():
		end = r.Gone.Format(tsFormat) + " (seen gone, no end line)"
	}
	return r.Start.Format(tsFormat) + " - " + end
}

func jobKey(h *history, id string) string {
	if r := h.Records[id]; r != nil {
		return fmt.Sprintf("%q", r.Key)
	}
	return "no record"
}

// checkNoOrphanProcessors: a processor is gone within DeathBound of its
// worker's death, however the worker died (invariant 4).
func checkNoOrphanProcessors(h *history) []violation {
	var vs []violation
	for _, w := range h.Workers {
		if w.Death.IsZero() {
			continue
		}
		limit := w.Death.Add(h.DeathBound)
		for _, r := range h.Runs {
			if r.PPID != w.PID || r.Start.After(w.Death) {
				continue
			}
			if end := r.until(); end.IsZero() || end.After(limit) {
				vs = append(vs, violation{4, fmt.Sprintf("job %s (%s): processor pid %d outlived its worker (%s pid %d, %s at %s) by more than %s: %s",
					r.Job, jobKey(h, r.Job), r.PID, w.Kind, w.PID, w.How, w.Death.Format(tsFormat), h.DeathBound, r.span())})
			}
		}
	}
	return vs
}

// checkNoDeadJobs: the processor always exits 0 and attempts are many, so
// no job may be dead (invariant 5).
func checkNoDeadJobs(h *history) []violation {
	var vs []violation
	for _, r := range sortedRecords(h) {
		if r.State == job.Dead {
			vs = append(vs, violation{5, fmt.Sprintf("job %s (%q version %q) is dead after %d attempts: %s", r.ID, r.Key, r.VersionID, r.Attempt, r.Error)})
		}
	}
	return vs
}

func sortedRecords(h *history) []*job.Record {
	rs := make([]*job.Record, 0, len(h.Records))
	for _, r := range h.Records {
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].ID < rs[j].ID })
	return rs
}

// crashCause reports whether an attempt's error says its worker died.
func crashCause(msg string) bool {
	return strings.Contains(strings.ToLower(msg), "stopped unexpectedly")
}

// attemptSlack widens an attempt's interval when matching worker stops:
// one clock, but a record's times are taken a write away from the event.
const attemptSlack = 250 * time.Millisecond

// checkAttemptsAreFailures: an attempt that did not succeed failed for a
// reason; "worker stopped unexpectedly" only when a kill -9 hit a worker
// during it, or its worker exited on its own while the S3 server it
// talks to stopped (a worker that cannot renew its lease stops: invariant
// 3; a clone worker then exits 1, and its lease lapses); a SIGTERM hands the job back and leaves no attempt; and since
// the processor always exits 0, any other error needs a worker death, or
// a stop of the S3 server (any conveyor up) the attempt talks to, during
// the attempt to explain it (invariant 5).
func checkAttemptsAreFailures(h *history) []violation {
	var vs []violation
	for _, r := range sortedRecords(h) {
		for i, a := range r.Attempts {
			if i == len(r.Attempts)-1 && r.State == job.Succeeded {
				continue
			}
			if i == len(r.Attempts)-1 && r.State == job.Superseded && strings.HasPrefix(a.Error, "superseded: ") {
				continue // ended by a newer version, which is not a failure
			}
			where := fmt.Sprintf("job %s (%q) attempt %d/%d on %s %s - %s", r.ID, r.Key, a.Number, len(r.Attempts), a.Owner, a.StartedAt.Format(tsFormat), fmtTime(a.FinishedAt))
			if a.FinishedAt.IsZero() && i == len(r.Attempts)-1 && !r.State.Terminal() {
				continue // still open; invariant 1 reports the state
			}
			kills, terms, others := deathsDuring(h, a)
			switch {
			case a.Error == "":
				vs = append(vs, violation{5, where + ": ended without success and without an error"})
			case crashCause(a.Error) && len(kills) == 0 && !(len(others) > 0 && serverStopped(h, a)):
				vs = append(vs, violation{5, fmt.Sprintf("%s: error %q but no worker was killed -9 during it (deaths: %v)", where, a.Error, append(terms, others...))})
			case len(kills) == 0 && len(terms) > 0:
				vs = append(vs, violation{5, fmt.Sprintf("%s: error %q: a SIGTERM (%v) left an attempt; a graceful stop hands the job back", where, a.Error, terms)})
			case len(kills) == 0 && len(others) == 0 && !serverStopped(h, a):
				vs = append(vs, violation{5, fmt.Sprintf("%s: failed with %q though the processor always exits 0 and no worker nor the S3 server stopped during it", where, a.Error)})
			}
		}
	}
	return vs
}

// deathsDuring returns the worker stops during attempt a, by how they
// died: those whose stop (from the signal to the pid gone) overlaps the
// attempt, by a worker that could have run it: its volume ID is the
// attempt's owner (or either is unknown).
func deathsDuring(h *history, a job.Attempt) (kills, terms, others []string) {
	for _, w := range h.Workers {
		if !w.during(a) {
			continue
		}
		if a.Owner != "" && w.VolumeID != "" && job.VolumeOf(a.Owner) != w.VolumeID { // owners are "<volume-id>/<process nonce>"
			continue
		}
		d := fmt.Sprintf("%s pid %d %s at %s", w.Kind, w.PID, w.How, w.Death.Format(tsFormat))
		switch w.How {
		case howKill9:
			kills = append(kills, d)
		case howTerm:
			terms = append(terms, d)
		default:
			others = append(others, d)
		}
	}
	return kills, terms, others
}

// serverStopped reports whether a `conveyor up`, which serves the S3
// endpoint every worker uses, stopped during attempt a.
func serverStopped(h *history, a job.Attempt) bool {
	for _, w := range h.Workers {
		if w.Kind == "up" && w.during(a) {
			return true
		}
	}
	return false
}

// during reports whether w's stop overlaps attempt a.
func (w workerProc) during(a job.Attempt) bool {
	if w.Death.IsZero() || w.Death.Before(a.StartedAt.Add(-attemptSlack)) {
		return false
	}
	return a.FinishedAt.IsZero() || !w.stopping().After(a.FinishedAt.Add(attemptSlack))
}

// checkCloneIdentity: a volume restored as a clone has a new identity
// (invariant 4), or its worker would take the original's jobs for its own.
func checkCloneIdentity(h *history) []violation {
	ids := map[string]map[string]bool{}
	for _, w := range h.Workers {
		if w.VolumeID == "" {
			continue
		}
		if ids[w.VolumeID] == nil {
			ids[w.VolumeID] = map[string]bool{}
		}
		ids[w.VolumeID][w.Kind] = true
	}
	var vs []violation
	for id, kinds := range ids {
		if kinds["up"] && kinds["clone"] {
			vs = append(vs, violation{4, fmt.Sprintf("the clone volume restored from a snapshot has the original's identity %s", id)})
		}
	}
	return vs
}

// tsFormat prints times to the millisecond, enough to order events.
const tsFormat = "15:04:05.000"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "open"
	}
	return t.Format(tsFormat)
}
