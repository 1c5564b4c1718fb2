package dashboard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
)

// Server is the dashboard: an HTTP server and the job index behind it.
type Server struct {
	cfg   Config
	deps  Deps
	index *Index
	hub   *hub
	pages *pages
	now   func() time.Time

	srv      *http.Server
	ln       net.Listener
	touches  chan string
	newest   map[job.State]string // newest done marker seen per finished state, by rescan
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	// scanned is closed when the first full scan has finished.
	scanned chan struct{}
}

// New returns a dashboard over deps. It does not listen yet: see Start.
// On a non-loopback address without a token, it generates one.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil || deps.S3 == nil {
		return nil, errors.New("dashboard: Deps.S3 and Deps.Store are required")
	}
	if cfg.Token == "" && !IsLoopback(cfg.Addr) {
		cfg.Token = randomHex(16)
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg: cfg, deps: deps, index: NewIndex(), hub: newHub(), pages: p, now: time.Now,
		touches: make(chan string, 4096), scanned: make(chan struct{}), newest: map[job.State]string{},
	}, nil
}

// Token is the access token, empty when none is required.
func (s *Server) Token() string { return s.cfg.Token }

// Index is the dashboard's job index.
func (s *Server) Index() *Index { return s.index }

// Handler is the dashboard's HTTP handler, with every security check.
func (s *Server) Handler() http.Handler { return s.routes() }

// Start listens on Config.Addr, serves in the background and starts the
// index's first scan and its periodic rescans.
func (s *Server) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil && s.cfg.FallbackPort {
		host, _, _ := net.SplitHostPort(s.cfg.Addr)
		if ln, err = net.Listen("tcp", net.JoinHostPort(host, "0")); err == nil {
			s.logf("dashboard: %s is taken; listening on %s instead", s.cfg.Addr, ln.Addr())
		}
	}
	if err != nil {
		return fmt.Errorf("dashboard: listen on %s: %w (choose another with --dashboard-addr, or set it empty to turn the dashboard off)", s.cfg.Addr, err)
	}
	s.ln = ln
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logf("dashboard: %v", err)
		}
	}()
	go func() { defer s.wg.Done(); s.maintain(ctx) }()
	go func() { defer s.wg.Done(); s.applyTouches(ctx) }()
	return nil
}

// Addr is the address the dashboard listens on (after Start).
func (s *Server) Addr() string {
	if s.ln == nil {
		return s.cfg.Addr
	}
	return s.ln.Addr().String()
}

// URL is the address to open in a browser, with the token when one is
// required.
func (s *Server) URL() string {
	u := "http://" + s.Addr() + "/"
	if s.cfg.Token != "" {
		u += "?token=" + s.cfg.Token
	}
	return u
}

// Scanned is closed once the first scan of the state bucket has finished.
func (s *Server) Scanned() <-chan struct{} { return s.scanned }

// Stop closes the listener and open connections (live streams included).
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		s.hub.close()
		if s.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			s.srv.Shutdown(ctx)
			cancel()
			s.srv.Close()
		}
		s.wg.Wait()
	})
}

// Observe records a job's new state; the pipeline calls it after every
// write of a record. It never blocks on I/O.
func (s *Server) Observe(r *job.Record) {
	if r == nil || !job.ValidID(r.ID) {
		return
	}
	if s.index.Put(entryOf(r)) {
		s.hub.publish(r.ID)
	}
}

// Touch asks the dashboard to read the job's record again soon (a job was
// created or changed by a part that does not hand over the record). It
// never blocks: when too many are pending, the next rescan catches up.
func (s *Server) Touch(id string) {
	select {
	case s.touches <- id:
	default:
	}
}

func (s *Server) applyTouches(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-s.touches:
			s.refresh(ctx, id)
		}
	}
}

// refresh reads one record into the index.
func (s *Server) refresh(ctx context.Context, id string) {
	r, _, err := s.deps.Store.Get(ctx, id)
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		if s.index.Remove(id) {
			s.hub.publish(id)
		}
	case err != nil:
		if ctx.Err() == nil {
			s.logf("dashboard: read job %s: %v", id, err)
		}
	default:
		s.Observe(r)
	}
}

// maintain builds the index and keeps it in step with the state bucket.
func (s *Server) maintain(ctx context.Context) {
	s.rescan(ctx, true)
	s.index.setReady()
	close(s.scanned)
	s.hub.publish("")
	t := time.NewTicker(s.cfg.Rescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.rescan(ctx, false)
		}
	}
}

// rescan keeps the index in step with the state bucket at the cost of
// what changed, never of the history: it reads every unfinished job
// (through the active markers), the jobs the index holds as unfinished
// that are no longer active (they finished, or are gone), and the finished
// jobs newer than the last scan (through the done markers, newest first,
// up to the window on the first scan). The index then keeps the newest
// Window finished jobs; older ones are paged from the store.
func (s *Server) rescan(ctx context.Context, first bool) {
	var toRead []string
	active := map[string]bool{}
	err := s.deps.Store.Active(ctx, "", func(e jobstore.ActiveEntry) error {
		active[e.ID] = true
		toRead = append(toRead, e.ID)
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			s.logf("dashboard: list active jobs: %v", err)
		}
		return
	}
	for _, id := range s.index.unfinished() {
		if !active[id] {
			toRead = append(toRead, id)
		}
	}
	// The newest finished jobs of each state since the last scan (on the
	// first, up to the window), then the newest Window of them all.
	var done []jobstore.DoneEntry
	for _, st := range []job.State{job.Succeeded, job.Dead, job.Superseded} {
		newest, n := s.newest[st], 0
		err := s.deps.Store.Done(ctx, st, "", int32(min(s.cfg.Window, 1000)), func(e jobstore.DoneEntry) error {
			if newest != "" && e.Marker >= newest {
				return jobstore.ErrStop // known from the last scan on
			}
			if n >= s.cfg.Window {
				s.index.setTrimmed(st) // older ones are paged from the store
				return jobstore.ErrStop
			}
			if n == 0 {
				s.newest[st] = e.Marker
			}
			n++
			done = append(done, e)
			return nil
		})
		if err != nil && ctx.Err() == nil {
			s.logf("dashboard: list %s jobs: %v", st, err)
		}
	}
	slices.SortFunc(done, func(a, b jobstore.DoneEntry) int { return b.FinishedAt.Compare(a.FinishedAt) })
	for i, e := range done {
		if i == s.cfg.Window {
			for _, st := range []job.State{job.Succeeded, job.Dead, job.Superseded} {
				s.index.setTrimmed(st)
			}
			break
		}
		if !s.index.has(e.ID) {
			toRead = append(toRead, e.ID)
		}
	}
	// A few readers in parallel: a first scan is bound by round trips, not
	// by bandwidth.
	ids := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				s.refresh(ctx, id)
			}
		}()
	}
	for _, id := range toRead {
		select {
		case ids <- id:
		case <-ctx.Done():
		}
	}
	close(ids)
	wg.Wait()
	for _, id := range s.index.trim(s.cfg.Window) {
		s.hub.publish(id)
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.deps.Logf != nil {
		s.deps.Logf(format, args...)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
