package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
)

func (s *Server) routes() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", s.handleIndex)
	m.HandleFunc("GET /jobs/{id}", s.handleJob)
	m.HandleFunc("GET /jobs/{id}/log", s.handleLog)
	m.HandleFunc("GET /jobs/{id}/outputs/{n}", s.handleOutput)
	m.HandleFunc("POST /jobs/{id}/retry", s.handleRetry)
	m.HandleFunc("GET /api/jobs", s.handleAPIJobs)
	m.HandleFunc("GET /api/jobs/{id}", s.handleAPIJob)
	m.HandleFunc("GET /api/events", s.handleEvents)
	m.HandleFunc("GET /api/throughput", s.handleThroughput)
	m.HandleFunc("POST /api/upload", s.handleUpload)
	m.HandleFunc("GET /api/snapshots", s.handleAPISnapshots)
	m.HandleFunc("POST /snapshots", s.handleSnapshotNow)
	if s.deps.Metrics != nil {
		m.Handle("GET /metrics", s.deps.Metrics)
	}
	static := http.FileServerFS(staticFS())
	m.Handle("GET /static/", http.StripPrefix("/static/", cacheFor(time.Hour, static)))
	m.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/static/icon.svg", http.StatusMovedPermanently)
	})
	return s.secure(m)
}

func cacheFor(d time.Duration, h http.Handler) http.Handler {
	v := "private, max-age=" + strconv.Itoa(int(d.Seconds()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", v)
		h.ServeHTTP(w, r)
	})
}

// csrfOf is the CSRF token of the request's browser (set by secure).
func csrfOf(r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil {
		return c.Value
	}
	return ""
}

// queryOf reads the list's filters from the URL.
func (s *Server) queryOf(r *http.Request) Query {
	v := r.URL.Query()
	q := Query{Search: strings.TrimSpace(v.Get("q")), Size: s.cfg.PageSize}
	if st := job.State(v.Get("state")); st.Valid() {
		q.State = st
	}
	q.Page, _ = strconv.Atoi(v.Get("page"))
	if q.Page < 1 {
		q.Page = 1
	}
	if len(q.Search) > 1024 {
		q.Search = q.Search[:1024]
	}
	return q
}

// page answers q from the in-memory window, and pages older finished jobs
// of one state, beyond the window, from the store's index: what is read
// is one page, however deep.
func (s *Server) page(ctx context.Context, q Query) Page {
	p := s.index.Query(q)
	if !q.State.Terminal() || q.Search != "" || !s.index.Trimmed(q.State) || p.Page < p.Pages {
		return p
	}
	if p.Page == p.Pages && len(p.Jobs) == q.Size {
		p.Pages++ // the last page of the window: older ones follow
		return p
	}
	recs, err := s.deps.Store.Recent(ctx, jobstore.Query{States: []job.State{q.State}, Skip: (q.Page - 1) * q.Size, Limit: q.Size})
	if err != nil {
		s.logf("dashboard: page %d of %s jobs: %v", q.Page, q.State, err)
		return p
	}
	p.Jobs = p.Jobs[:0]
	for _, r := range recs {
		p.Jobs = append(p.Jobs, *entryOf(r))
	}
	p.Page, p.Pages = q.Page, q.Page
	if len(recs) == q.Size {
		p.Pages++
	}
	return p
}

type indexView struct {
	CSRF      string
	Query     Query
	Page      Page
	States    []job.State
	Snapshots *snapshotsView
	Input     string
	Now       time.Time
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	q := s.queryOf(r)
	v := indexView{
		CSRF: csrfOf(r), Query: q, Page: s.page(r.Context(), q), States: job.States,
		Input: s.deps.InputBucket, Now: s.now(),
	}
	if s.deps.Snapshots != nil {
		v.Snapshots = s.snapshotsView(r)
	}
	render(w, s.pages.index, v)
}

type jobView struct {
	CSRF     string
	Rec      *job.Record
	Outputs  []outputView
	CanRetry bool
	Retried  bool
	Error    string
}

type outputView struct {
	N    int    `json:"n"`
	Name string `json:"name"`
	Key  string `json:"key"`
	Size int64  `json:"size"`
	SHA  string `json:"sha256"`
}

func outputsOf(r *job.Record) []outputView {
	var out []outputView
	for i, o := range r.Outputs {
		out = append(out, outputView{N: i, Name: outputName(r, o.Key), Key: o.Key, Size: o.Size, SHA: o.SHA256})
	}
	return out
}

// record reads a job's record for a page, writing the error response when
// it cannot.
func (s *Server) record(w http.ResponseWriter, r *http.Request) (*job.Record, bool) {
	id := r.PathValue("id")
	if !job.ValidID(id) {
		http.Error(w, "not a job ID: want 32 lowercase hex digits", http.StatusNotFound)
		return nil, false
	}
	rec, _, err := s.deps.Store.Get(r.Context(), id)
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		http.Error(w, "no job "+id, http.StatusNotFound)
		return nil, false
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadGateway)
		return nil, false
	}
	// The page shows the record as read: keep the list in step with it.
	s.Observe(rec)
	return rec, true
}

func (s *Server) handleJob(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.record(w, r)
	if !ok {
		return
	}
	render(w, s.pages.job, jobView{
		CSRF: csrfOf(r), Rec: rec, Outputs: outputsOf(rec), CanRetry: canRetry(rec.State),
		Retried: r.URL.Query().Get("retried") == "1", Error: r.URL.Query().Get("error"),
	})
}

// apiJob is a record as the job page's script reads it.
type apiJob struct {
	*job.Record
	CanRetry bool         `json:"can_retry"`
	Links    []outputView `json:"output_links"`
}

func (s *Server) handleAPIJob(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.record(w, r)
	if !ok {
		return
	}
	writeJSON(w, apiJob{Record: rec, CanRetry: canRetry(rec.State), Links: outputsOf(rec)})
}

// apiEntry is one row of the list.
type apiEntry struct {
	ID          string   `json:"id"`
	Key         string   `json:"key"`
	State       string   `json:"state"`
	Size        int64    `json:"size"`
	SizeText    string   `json:"size_text"`
	Attempt     int      `json:"attempt"`
	MaxAttempts int      `json:"max_attempts"`
	Created     string   `json:"created"`
	Queued      string   `json:"queued"`
	Running     string   `json:"running"`
	Outputs     []string `json:"outputs"`
	NOutputs    int      `json:"n_outputs"`
}

type apiPage struct {
	Jobs   []apiEntry     `json:"jobs"`
	Total  int            `json:"total"`
	All    int            `json:"all"`
	Counts map[string]int `json:"counts"`
	Page   int            `json:"page"`
	Pages  int            `json:"pages"`
	Ready  bool           `json:"ready"`
}

func countsJSON(p Page) map[string]int {
	c := make(map[string]int, len(job.States))
	for _, st := range job.States {
		c[string(st)] = p.Counts[st]
	}
	return c
}

func (s *Server) handleAPIJobs(w http.ResponseWriter, r *http.Request) {
	p := s.page(r.Context(), s.queryOf(r))
	now := s.now()
	out := apiPage{Jobs: make([]apiEntry, 0, len(p.Jobs)), Total: p.Total, All: p.All, Counts: countsJSON(p), Page: p.Page, Pages: p.Pages, Ready: p.Ready}
	for _, e := range p.Jobs {
		out.Jobs = append(out.Jobs, apiEntry{
			ID: e.ID, Key: e.Key, State: string(e.State), Size: e.Size, SizeText: humanBytes(e.Size),
			Attempt: e.Attempt, MaxAttempts: e.MaxAttempts, Created: e.Created.UTC().Format("2006-01-02 15:04:05Z"),
			Queued: humanMS(e.QueuedMS), Running: humanMS(e.RunningMS(now)), Outputs: e.Outputs, NOutputs: e.NOutputs,
		})
	}
	writeJSON(w, out)
}

type apiThroughput struct {
	Start        time.Time `json:"start"`
	Finished     []int     `json:"finished"`
	Failed       []int     `json:"failed"`
	AvgProcessMS []int64   `json:"avg_process_ms"`
}

func (s *Server) handleThroughput(w http.ResponseWriter, r *http.Request) {
	t := s.index.Throughput(s.now())
	writeJSON(w, apiThroughput{Start: t.Start, Finished: t.Finished[:], Failed: t.Failed[:], AvgProcessMS: t.AvgProcessMS[:]})
}

func (s *Server) handleRetry(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !job.ValidID(id) {
		http.Error(w, "not a job ID", http.StatusNotFound)
		return
	}
	if s.deps.Retry == nil {
		http.Error(w, "retrying is not available here", http.StatusNotImplemented)
		return
	}
	rec, err := s.deps.Retry(r.Context(), id)
	if err != nil {
		s.logf("dashboard: retry job %s: %v", id, err)
		if wantsJSON(r) {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		http.Redirect(w, r, "/jobs/"+id+"?error="+url.QueryEscape(err.Error()), http.StatusSeeOther)
		return
	}
	s.Observe(rec)
	s.logf("dashboard: job %s retried from the dashboard", id)
	if wantsJSON(r) {
		writeJSON(w, apiJob{Record: rec, CanRetry: canRetry(rec.State), Links: outputsOf(rec)})
		return
	}
	http.Redirect(w, r, "/jobs/"+id+"?retried=1", http.StatusSeeOther)
}

func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}
