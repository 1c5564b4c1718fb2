package dashboard

import (
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// Entry is what the index keeps of one job: enough to list it, not its
// whole record.
type Entry struct {
	ID          string
	Key         string
	State       job.State
	Size        int64
	Attempt     int
	MaxAttempts int
	Created     time.Time
	Started     time.Time // start of the current or last attempt; zero before
	Finished    time.Time // zero while unfinished
	QueuedMS    int64
	ProcessMS   int64
	TotalMS     int64
	Outputs     []string // output names relative to the job's key, at most maxListedOutputs
	NOutputs    int
}

const maxListedOutputs = 4

// entryOf extracts an Entry from a record.
func entryOf(r *job.Record) *Entry {
	e := &Entry{
		ID: r.ID, Key: r.Key, State: r.State, Size: r.Size,
		Attempt: r.Attempt, MaxAttempts: r.MaxAttempts, Created: r.CreatedAt,
		QueuedMS: r.Timings.QueuedMS, ProcessMS: r.Timings.ProcessMS, TotalMS: r.Timings.TotalMS,
		NOutputs: len(r.Outputs),
	}
	if r.FinishedAt != nil {
		e.Finished = *r.FinishedAt
	}
	if r.StartedAt != nil {
		e.Started = *r.StartedAt
	}
	if e.QueuedMS == 0 && r.StartedAt != nil && r.Attempt <= 1 {
		e.QueuedMS = r.StartedAt.Sub(r.CreatedAt).Milliseconds()
	}
	for i, o := range r.Outputs {
		if i == maxListedOutputs {
			break
		}
		e.Outputs = append(e.Outputs, outputName(r, o.Key))
	}
	return e
}

// RunningMS is how long the job has been running (a running job) or ran
// (its last attempt).
func (e *Entry) RunningMS(now time.Time) int64 {
	if e.State == job.Running && !e.Started.IsZero() {
		return max(now.Sub(e.Started).Milliseconds(), 1)
	}
	return e.TotalMS
}

// outputName is an output's name relative to its job: what follows the
// input key, or the base name for outputs stored elsewhere.
func outputName(r *job.Record, key string) string {
	if rel, ok := strings.CutPrefix(key, r.Key+"/"); ok {
		return rel
	}
	return path.Base(key)
}

// newer orders entries newest first; the ID breaks ties so the order is
// total and stable across rescans.
func newer(a, b *Entry) int {
	if c := b.Created.Compare(a.Created); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// Index is the in-memory list of every job, newest first. It is safe for
// concurrent use.
type Index struct {
	mu      sync.RWMutex
	byID    map[string]*Entry
	sorted  []*Entry           // newest first
	version uint64             // bumped on every change
	ready   bool               // the first full scan finished
	trimmed map[job.State]bool // finished jobs of this state beyond the window exist
}

// NewIndex returns an empty index.
func NewIndex() *Index { return &Index{byID: map[string]*Entry{}, trimmed: map[job.State]bool{}} }

func (x *Index) setTrimmed(state job.State) {
	x.mu.Lock()
	x.trimmed[state] = true
	x.mu.Unlock()
}

// Trimmed reports whether older finished jobs of state exist beyond the
// window (they are paged from the store).
func (x *Index) Trimmed(state job.State) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.trimmed[state]
}

// Put inserts or replaces e. It reports whether anything visible changed.
func (x *Index) Put(e *Entry) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.byID[e.ID]; ok {
		if equalEntry(old, e) {
			return false
		}
		if old.Created.Equal(e.Created) {
			*old = *e // same place in the order
			x.version++
			return true
		}
		x.removeLocked(old)
	}
	i, _ := slices.BinarySearchFunc(x.sorted, e, newer)
	x.sorted = slices.Insert(x.sorted, i, e)
	x.byID[e.ID] = e
	x.version++
	return true
}

// Remove drops the job with id, if present.
func (x *Index) Remove(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.byID[id]
	if ok {
		x.removeLocked(e)
		x.version++
	}
	return ok
}

func (x *Index) removeLocked(e *Entry) {
	delete(x.byID, e.ID)
	if i, found := slices.BinarySearchFunc(x.sorted, e, newer); found {
		x.sorted = slices.Delete(x.sorted, i, i+1)
	}
}

func equalEntry(a, b *Entry) bool {
	return a.State == b.State && a.Attempt == b.Attempt && a.MaxAttempts == b.MaxAttempts &&
		a.Size == b.Size && a.Key == b.Key && a.Created.Equal(b.Created) && a.Started.Equal(b.Started) && a.Finished.Equal(b.Finished) &&
		a.QueuedMS == b.QueuedMS && a.ProcessMS == b.ProcessMS && a.TotalMS == b.TotalMS &&
		a.NOutputs == b.NOutputs && slices.Equal(a.Outputs, b.Outputs)
}

// Get returns a copy of the entry of id.
func (x *Index) Get(id string) (Entry, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, ok := x.byID[id]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// unfinished returns the IDs of jobs not in a terminal state.
func (x *Index) unfinished() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var ids []string
	for _, e := range x.sorted {
		if !e.State.Terminal() {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// trim drops the oldest finished jobs beyond the newest keep of them and
// returns their IDs. Unfinished jobs always stay.
func (x *Index) trim(keep int) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var dropped []string
	finished := 0
	for _, e := range x.sorted {
		if e.State.Terminal() {
			finished++
		}
	}
	for i := len(x.sorted) - 1; i >= 0 && finished > keep; i-- {
		e := x.sorted[i]
		if !e.State.Terminal() {
			continue
		}
		delete(x.byID, e.ID)
		x.sorted = slices.Delete(x.sorted, i, i+1)
		dropped = append(dropped, e.ID)
		x.trimmed[e.State] = true
		finished--
	}
	if len(dropped) > 0 {
		x.version++
	}
	return dropped
}

// has reports whether id is indexed.
func (x *Index) has(id string) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	_, ok := x.byID[id]
	return ok
}

// ids returns every indexed ID.
func (x *Index) ids() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	ids := make([]string, 0, len(x.byID))
	for id := range x.byID {
		ids = append(ids, id)
	}
	return ids
}

func (x *Index) setReady() {
	x.mu.Lock()
	x.ready = true
	x.version++
	x.mu.Unlock()
}

// Query selects a page of jobs.
type Query struct {
	State  job.State // empty: every state
	Search string    // substring of the key, case-insensitive; empty: all
	Page   int       // from 1
	Size   int       // jobs per page
}

// Page is one page of a query's results.
type Page struct {
	Jobs    []Entry
	Total   int               // jobs matching the query
	Counts  map[job.State]int // jobs per state, over the whole index
	All     int               // every job
	Page    int
	Pages   int
	Ready   bool // the first scan finished; before, the list is partial
	Version uint64
}

// Query returns one page, newest first. It walks the index once, without
// copying it: fast enough for 100,000 jobs per request.
func (x *Index) Query(q Query) Page {
	if q.Size < 1 {
		q.Size = DefaultPageSize
	}
	if q.Page < 1 {
		q.Page = 1
	}
	needle := strings.ToLower(q.Search)
	x.mu.RLock()
	defer x.mu.RUnlock()
	p := Page{Counts: make(map[job.State]int, len(job.States)), All: len(x.sorted), Ready: x.ready, Version: x.version}
	from := (q.Page - 1) * q.Size
	// Counting in an array, not the map, keeps the walk over 100,000
	// entries cheap.
	var counts [8]int
	for _, e := range x.sorted {
		counts[stateSlot(e.State)]++
		if q.State != "" && e.State != q.State {
			continue
		}
		if needle != "" && !containsFold(e.Key, needle) {
			continue
		}
		if p.Total >= from && len(p.Jobs) < q.Size {
			p.Jobs = append(p.Jobs, *e)
		}
		p.Total++
	}
	for i, st := range job.States {
		p.Counts[st] = counts[i]
	}
	p.Pages = max(1, (p.Total+q.Size-1)/q.Size)
	p.Page = q.Page
	return p
}

// stateSlot is the position of s in job.States; unknown states share the
// last slot.
func stateSlot(s job.State) int {
	for i, v := range job.States {
		if v == s {
			return i
		}
	}
	return 7
}

// containsFold reports whether s contains lower (already lower-cased),
// ignoring case, without allocating for ASCII keys.
func containsFold(s, lower string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return strings.Contains(strings.ToLower(s), lower)
		}
	}
	n := len(lower)
	for i := 0; i+n <= len(s); i++ {
		ok := true
		for j := 0; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// Throughput is the last hour, minute by minute, oldest first.
type Throughput struct {
	Start        time.Time // start of the first minute
	Finished     [60]int   // jobs that ended (succeeded, dead or superseded) in each minute
	Failed       [60]int   // of which dead
	AvgProcessMS [60]int64 // mean processing time of the jobs that succeeded in each minute
}

// Throughput counts the jobs finished in each minute of the hour before now.
func (x *Index) Throughput(now time.Time) Throughput {
	end := now.Truncate(time.Minute).Add(time.Minute)
	t := Throughput{Start: end.Add(-60 * time.Minute)}
	var sum [60]int64
	var n [60]int64
	x.mu.RLock()
	for _, e := range x.sorted {
		if e.Finished.IsZero() || e.Finished.Before(t.Start) || !e.Finished.Before(end) {
			continue
		}
		i := int(e.Finished.Sub(t.Start) / time.Minute)
		t.Finished[i]++
		switch e.State {
		case job.Dead:
			t.Failed[i]++
		case job.Succeeded:
			sum[i] += e.ProcessMS
			n[i]++
		}
	}
	x.mu.RUnlock()
	for i := range sum {
		if n[i] > 0 {
			t.AvgProcessMS[i] = sum[i] / n[i]
		}
	}
	return t
}
